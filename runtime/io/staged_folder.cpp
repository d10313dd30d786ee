#include "runtime/io/staged_folder.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2, RENAME_EXCHANGE (glibc, _GNU_SOURCE)
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "runtime/io/file_io.h"

namespace peftrun {

namespace fs = std::filesystem;

namespace {

// ".NAME.<tag>-PID": hidden, and unique per process. (Built with appends: GCC 12 warns falsely,
// -Wrestrict, on "." + std::string.)
std::string hidden_sibling_name(const fs::path& target, const char* tag) {
  std::string name(".");
  name += target.filename().string();
  name += tag;
  name += std::to_string(::getpid());
  return name;
}

// Every file written into the folder was fsynced by its writer; the folder's own entries need
// one more fsync before the rename publishes them.
void sync_tree_dirs(const fs::path& dir) {
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (e.is_directory()) fsync_directory(e.path().string());
  }
  fsync_directory(dir.string());
}

}  // namespace

StagedFolder::StagedFolder(const std::string& target) {
  fs::path t = fs::path(target).lexically_normal();
  if (!t.has_filename()) t = t.parent_path();  // "out/" names the folder "out"
  if (t.empty() || t.filename() == "." || t.filename() == "..") {
    throw std::runtime_error("cannot write folder '" + target +
                             "': expected a folder name (not '.', '..' or empty)");
  }
  target_ = t.string();
  const fs::path parent = t.has_parent_path() ? t.parent_path() : fs::path(".");
  parent_ = parent.string();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) {
    throw std::runtime_error("cannot create folder '" + parent_ + "' for '" + target_ +
                             "': " + ec.message());
  }
  tmp_ = (parent / hidden_sibling_name(t, ".tmp-")).string();
  fs::remove_all(tmp_, ec);  // a leftover of a killed run that had our pid
  if (!fs::create_directory(tmp_, ec) || ec) {
    throw std::runtime_error("cannot write '" + target_ +
                             "': cannot create the temporary folder '" + tmp_ +
                             "': " + (ec ? ec.message() : std::string("it exists")));
  }
}

StagedFolder::~StagedFolder() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagedFolder::commit() {
  if (committed_) throw std::logic_error("StagedFolder::commit twice for '" + target_ + "'");
  sync_tree_dirs(tmp_);
  auto fail = [&](const std::string& step, int err) {
    throw std::runtime_error("cannot put '" + tmp_ + "' in place of '" + target_ + "': " + step +
                             ": " + std::strerror(err));
  };
  std::error_code ec;
  const bool replacing = fs::exists(fs::symlink_status(target_, ec));
  std::string old;  // what holds the previous target after the swap
  if (!replacing) {
    if (::rename(tmp_.c_str(), target_.c_str()) != 0) fail("rename failed", errno);
  } else if (::renameat2(AT_FDCWD, tmp_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
    old = tmp_;  // the exchange left the previous target under the temporary name
  } else if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) {
    // No atomic exchange on this filesystem: move the old one aside first.
    old = (fs::path(parent_) / hidden_sibling_name(target_, ".old-")).string();
    fs::remove_all(old, ec);
    if (::rename(target_.c_str(), old.c_str()) != 0)
      fail("moving the old folder aside failed", errno);
    if (::rename(tmp_.c_str(), target_.c_str()) != 0) {
      const int err = errno;
      ::rename(old.c_str(), target_.c_str());  // put the old one back
      fail("rename failed", err);
    }
  } else {
    fail("exchange failed", errno);
  }
  committed_ = true;
  fsync_directory(parent_);
  if (!old.empty()) {
    fs::remove_all(old, ec);
    if (ec) {
      throw std::runtime_error("wrote '" + target_ +
                               "' but cannot delete the previous contents in '" + old +
                               "': " + ec.message());
    }
  }
}

}  // namespace peftrun
