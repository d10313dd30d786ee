// Carves one caller-owned workspace into 256-byte aligned pieces (cuBLASLt's preferred
// alignment, and enough for any vector load). The same carving code runs twice: once without
// a base to measure (the op's `*_workspace_bytes` function) and once on the real buffer, so the
// size an op asks for and the pieces it uses can never disagree.
#pragma once

#include <cstddef>

namespace peftrun {

class WorkspaceCarver {
 public:
  static constexpr std::size_t kAlignment = 256;

  // base nullptr: measuring only; take() then returns nullptr.
  explicit WorkspaceCarver(void* base = nullptr) : base_(static_cast<unsigned char*>(base)) {}

  // n elements of T, or nullptr (and no space) when n == 0.
  template <typename T>
  T* take(std::size_t n) {
    if (n == 0) return nullptr;
    offset_ = align_up(offset_);
    unsigned char* p = base_ ? base_ + offset_ : nullptr;
    offset_ += n * sizeof(T);
    return reinterpret_cast<T*>(p);
  }
  void* take_bytes(std::size_t bytes) { return take<unsigned char>(bytes); }

  std::size_t bytes() const { return align_up(offset_); }

  // A carver continuing from here over the same buffer: two forks (e.g. forward-only and
  // backward-only scratch) overlap, and the op needs the larger of their bytes().
  WorkspaceCarver fork() const { return *this; }

 private:
  static std::size_t align_up(std::size_t x) {
    return (x + kAlignment - 1) / kAlignment * kAlignment;
  }

  unsigned char* base_;
  std::size_t offset_ = 0;
};

}  // namespace peftrun
