// Small POSIX file helpers shared by the checkpoint (safetensors) and data (token file) code.
//
// Both formats need the same two things: crash-safe whole-file writes (a checkpoint that is half
// written when the machine dies must never replace a good one) and positional reads of byte
// ranges (so a large checkpoint can be read one tensor at a time). Every failure throws
// std::runtime_error whose message names the file and the OS error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace peftrun {

// Throws std::runtime_error("<what> '<path>': <strerror(err)>").
[[noreturn]] void throw_os_error(const std::string& what, const std::string& path, int err);

// A contiguous piece of the file being written; write_file_atomic concatenates them so callers
// can write header and payload without first copying them into one buffer.
using ByteChunk = std::span<const std::uint8_t>;

// Writes the concatenation of `chunks` to `path` so that after a crash `path` holds either its
// old contents or the complete new ones: write `path.tmp-<pid>`, fsync it, rename it over
// `path`, fsync the directory. On failure the temporary file is removed and std::runtime_error
// names the file and the OS error.
void write_file_atomic(const std::string& path, std::span<const ByteChunk> chunks);

// A read-only regular file with positional reads (pread), so readers never share a seek offset
// and can fetch just the byte range they need. Move-only: it owns the descriptor.
class ReadOnlyFile {
 public:
  // Throws if the file cannot be opened or is not a regular file.
  explicit ReadOnlyFile(std::string path);
  ~ReadOnlyFile();
  ReadOnlyFile(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile& operator=(ReadOnlyFile&& other) noexcept;
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  const std::string& path() const { return path_; }
  // Size when the file was opened; readers validate their layout against it once.
  std::uint64_t size() const { return size_; }

  // Reads exactly n bytes starting at offset; throws naming the file on an OS error or when the
  // file ends early (it may have been truncated after it was opened).
  void read_at(std::uint64_t offset, void* dst, std::size_t n) const;

 private:
  std::string path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// A new file written front to back, for outputs too large to assemble in memory first (a merged
// model's shards). Not crash-safe by itself: callers write into a temporary folder that is
// renamed into place as a whole. Move-only: it owns the descriptor; a file that was never
// finish()ed is closed and removed by the destructor.
class WriteOnlyFile {
 public:
  // Creates `path`, which must not exist yet (O_EXCL). Throws naming the file and the OS error.
  explicit WriteOnlyFile(std::string path);
  ~WriteOnlyFile();
  WriteOnlyFile(WriteOnlyFile&& other) noexcept;
  WriteOnlyFile& operator=(WriteOnlyFile&&) = delete;
  WriteOnlyFile(const WriteOnlyFile&) = delete;
  WriteOnlyFile& operator=(const WriteOnlyFile&) = delete;

  const std::string& path() const { return path_; }
  // Appends n bytes; throws naming the file and the OS error (e.g. a full disk).
  void write(const void* data, std::size_t n);
  // fsync and close; throws naming the file on failure.
  void finish();

 private:
  std::string path_;
  int fd_ = -1;
};

// fsyncs a directory, so entries just created or renamed in it survive a crash. Throws naming it.
void fsync_directory(const std::string& dir);

}  // namespace peftrun
