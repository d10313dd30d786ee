#include "runtime/io/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace peftrun {

void throw_os_error(const std::string& what, const std::string& path, int err) {
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(err));
}

namespace {

// write(2) may write less than asked (signals, pipes, quotas); loop until done or a real error.
// Returns 0 on success, else the errno value.
int write_all(int fd, const std::uint8_t* data, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;  // should not happen for regular files; avoid spinning forever
    data += w;
    n -= static_cast<std::size_t>(w);
  }
  return 0;
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

void write_file_atomic(const std::string& path, std::span<const ByteChunk> chunks) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int err = errno;
    throw_os_error("cannot write '" + path + "': cannot create temporary file", tmp, err);
  }

  // Any failure from here until the rename must remove the temporary file, so a crashed or
  // failed save never leaves litter next to the checkpoints.
  auto fail = [&](const char* step, int err, bool fd_open) {
    if (fd_open) ::close(fd);
    ::unlink(tmp.c_str());
    throw_os_error(std::string("cannot write '") + path + "': " + step, tmp, err);
  };

  for (const ByteChunk& chunk : chunks) {
    if (const int err = write_all(fd, chunk.data(), chunk.size()); err != 0) {
      fail("write failed on", err, true);
    }
  }
  // fsync before rename: otherwise the rename can reach the disk before the data, and a crash
  // leaves `path` pointing at an empty or partial file.
  if (::fsync(fd) != 0) fail("fsync failed on", errno, true);
  // close can report deferred write errors (e.g. NFS); treat them as failures too.
  if (::close(fd) != 0) fail("close failed on", errno, false);
  if (::rename(tmp.c_str(), path.c_str()) != 0) fail("rename failed from", errno, false);

  // The rename lives in the directory; fsync it so the new name itself survives a crash.
  try {
    fsync_directory(parent_dir(path));
  } catch (const std::runtime_error& e) {
    throw std::runtime_error("wrote '" + path + "' but " + e.what());
  }
}

ReadOnlyFile::ReadOnlyFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw_os_error("cannot open", path_, errno);
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw_os_error("cannot stat", path_, err);
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot read '" + path_ + "': not a regular file");
  }
  size_ = static_cast<std::uint64_t>(st.st_size);
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

ReadOnlyFile::ReadOnlyFile(ReadOnlyFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

ReadOnlyFile& ReadOnlyFile::operator=(ReadOnlyFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

void ReadOnlyFile::read_at(std::uint64_t offset, void* dst, std::size_t n) const {
  auto* out = static_cast<std::uint8_t*>(dst);
  while (n > 0) {
    const ssize_t r = ::pread(fd_, out, n, static_cast<off_t>(offset));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_os_error("read failed on", path_, errno);
    }
    if (r == 0) {
      throw std::runtime_error("read failed on '" + path_ + "': unexpected end of file at byte " +
                               std::to_string(offset) + " (was it truncated while open?)");
    }
    out += r;
    offset += static_cast<std::uint64_t>(r);
    n -= static_cast<std::size_t>(r);
  }
}

WriteOnlyFile::WriteOnlyFile(std::string path) : path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_os_error("cannot create", path_, errno);
}

WriteOnlyFile::~WriteOnlyFile() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(path_.c_str());  // never finished: a partial file must not look like a result
}

WriteOnlyFile::WriteOnlyFile(WriteOnlyFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)) {}

void WriteOnlyFile::write(const void* data, std::size_t n) {
  if (fd_ < 0) throw std::logic_error("WriteOnlyFile::write after finish on '" + path_ + "'");
  if (const int err = write_all(fd_, static_cast<const std::uint8_t*>(data), n); err != 0) {
    throw_os_error("write failed on", path_, err);
  }
}

void WriteOnlyFile::finish() {
  if (fd_ < 0) throw std::logic_error("WriteOnlyFile::finish twice on '" + path_ + "'");
  const int fd = std::exchange(fd_, -1);
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    ::unlink(path_.c_str());
    throw_os_error("fsync failed on", path_, err);
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(path_.c_str());
    throw_os_error("close failed on", path_, err);
  }
}

void fsync_directory(const std::string& dir) {
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) throw_os_error("cannot open folder", dir, errno);
  if (::fsync(dfd) != 0) {
    const int err = errno;
    ::close(dfd);
    throw_os_error("fsync failed on folder", dir, err);
  }
  ::close(dfd);
}

}  // namespace peftrun
