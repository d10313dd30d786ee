// The CPU runner of the parity cases (see tests/gpu/parity_support.h): host buffers with poisoned
// guard bytes on both sides, and the ops' shared launch code (kernels/*_blocks.h) driven by the
// block emulator instead of the GPU.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/adalora_blocks.h"
#include "kernels/attention_blocks.h"
#include "kernels/cross_entropy_blocks.h"
#include "kernels/elementwise_blocks.h"
#include "kernels/embedding_blocks.h"
#include "kernels/rmsnorm_blocks.h"
#include "kernels/rope_blocks.h"
#include "kernels/swiglu_blocks.h"
#include "tests/support/block_emulator.h"

namespace peftrun::emu {

// n elements of T between two 64-byte guards; all bytes start as 0xFF.
template <class T>
class GuardedBuffer {
 public:
  explicit GuardedBuffer(std::size_t n) : n_(n), bytes_(n * sizeof(T) + 2 * kGuard, 0xFF) {}
  T* data() { return reinterpret_cast<T*>(bytes_.data() + kGuard); }
  const T* data() const { return reinterpret_cast<const T*>(bytes_.data() + kGuard); }
  std::size_t size() const { return n_; }
  bool guards_intact() const {
    for (std::size_t i = 0; i < kGuard; ++i) {
      if (bytes_[i] != 0xFF || bytes_[bytes_.size() - 1 - i] != 0xFF) return false;
    }
    return true;
  }

 private:
  static constexpr std::size_t kGuard = 64;  // keeps data() 16-byte aligned
  std::size_t n_;
  std::vector<unsigned char> bytes_;
};

class EmuEnv {
 public:
  explicit EmuEnv(Schedule schedule = Schedule::kInOrder) : launch_(schedule) {}

  template <class T>
  using Buffer = GuardedBuffer<T>;

  template <class T>
  Buffer<T> upload(const std::vector<T>& v) {
    Buffer<T> b(v.size());
    if (!v.empty()) std::memcpy(b.data(), v.data(), v.size() * sizeof(T));
    return b;
  }
  template <class T>
  Buffer<T> poisoned(std::size_t n) {
    return Buffer<T>(n);
  }
  template <class T>
  std::vector<T> download(const Buffer<T>& b) {
    EXPECT_TRUE(b.guards_intact()) << "a kernel wrote outside a buffer";
    std::vector<T> v(b.size());
    if (!v.empty()) std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
    return v;
  }

  template <class... A>
  void attention_forward(A&&... a) {
    blocks::launch_attention_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void attention_backward(A&&... a) {
    blocks::launch_attention_backward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void cross_entropy_forward_backward(A&&... a) {
    blocks::launch_cross_entropy_forward_backward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void rmsnorm_forward(A&&... a) {
    blocks::launch_rmsnorm_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void rmsnorm_backward(A&&... a) {
    blocks::launch_rmsnorm_backward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void rope_forward(A&&... a) {
    blocks::launch_rope_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void rope_backward(A&&... a) {
    blocks::launch_rope_backward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void swiglu_forward(A&&... a) {
    blocks::launch_swiglu_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void swiglu_backward(A&&... a) {
    blocks::launch_swiglu_backward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void embedding_forward(A&&... a) {
    blocks::launch_embedding_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void add_inplace(A&&... a) {
    blocks::launch_add_inplace(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void adalora_orth_reg(A&&... a) {
    blocks::launch_adalora_orth_reg(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void zero_masked_rows(A&&... a) {
    blocks::launch_zero_masked_rows(launch_, std::forward<A>(a)...);
  }

 private:
  EmulatedLauncher launch_;
};

}  // namespace peftrun::emu
