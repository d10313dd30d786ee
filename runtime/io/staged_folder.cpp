#include "runtime/io/staged_folder.h"

#include <fcntl.h>
#include <signal.h>
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

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

// ".NAME<tag>HOST-" (e.g. ".out.tmp-node7-"): what every hidden sibling of `target` that this
// machine's processes make with that tag starts with; the PID follows. The host keeps apart the
// processes of several machines sharing the folder. (Built with appends: GCC 12 warns falsely,
// -Wrestrict, on "." + std::string.)
std::string local_sibling_prefix(const fs::path& target, const char* tag) {
  std::string name(".");
  name += target.filename().string();
  name += tag;
  name += host_name();
  name += '-';
  return name;
}

// ".NAME<tag>HOST-PID": hidden and unique per process.
std::string hidden_sibling_name(const fs::path& target, const char* tag) {
  return local_sibling_prefix(target, tag) + std::to_string(::getpid());
}

// `name` is "<local_prefix>PID" of a process that no longer runs (killed mid-write). Another
// machine's sibling never has the prefix; a live process's is never touched.
bool left_by_dead_local_process(const std::string& name, const std::string& local_prefix) {
  if (name.compare(0, local_prefix.size(), local_prefix) != 0) return false;
  const std::string digits = name.substr(local_prefix.size());
  if (digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  const pid_t pid = static_cast<pid_t>(std::stol(digits));
  return pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH;
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
  // Leftovers of killed runs of this machine: a half-written temporary folder is garbage; a
  // previous target moved aside is garbage only once the target exists again (otherwise it is
  // the only copy, and stays for the user to rename back).
  const std::string tmp_prefix = local_sibling_prefix(t, ".tmp-");
  const std::string old_prefix = local_sibling_prefix(t, ".old-");
  const bool target_exists = fs::exists(fs::symlink_status(t, ec));
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (left_by_dead_local_process(name, tmp_prefix) ||
        (target_exists && left_by_dead_local_process(name, old_prefix))) {
      std::error_code rm;
      fs::remove_all(e.path(), rm);
      if (!rm) removed_leftovers_.push_back(e.path().string());
    }
  }
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
  } else if (exchange_paths(tmp_, target_)) {
    old = tmp_;  // the exchange left the previous target under the temporary name
  } else {
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
