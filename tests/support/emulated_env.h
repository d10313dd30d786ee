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
#include "kernels/adamw.h"
#include "kernels/adamw_blocks.h"
#include "kernels/attention_launch.h"
#include "kernels/convert_blocks.h"
#include "kernels/cross_entropy_blocks.h"
#include "kernels/dora_blocks.h"
#include "kernels/dropout_blocks.h"
#include "kernels/elementwise_blocks.h"
#include "kernels/embedding_blocks.h"
#include "kernels/emulated/block_emulator.h"
#include "kernels/gemm_blocks.h"
#include "kernels/glu_blocks.h"
#include "kernels/nonfinite_blocks.h"
#include "kernels/rmsnorm_blocks.h"
#include "kernels/rope_blocks.h"

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
  void glu_forward(A&&... a) {
    blocks::launch_glu_forward(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void glu_backward(A&&... a) {
    blocks::launch_glu_backward(launch_, std::forward<A>(a)...);
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
  void scale(A&&... a) {
    blocks::launch_scale(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void adalora_orth_reg(A&&... a) {
    blocks::launch_adalora_orth_reg(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void zero_masked_rows(A&&... a) {
    blocks::launch_zero_masked_rows(launch_, std::forward<A>(a)...);
  }

  void adamw_step(float* params, const float* grads, float* m, float* v, std::size_t n,
                  const AdamWHyper& h) {
    blocks::launch_adamw_step(launch_, params, grads, m, v, n, adamw_scalars(h));
  }
  std::size_t sum_squares_workspace_bytes(std::size_t n) const {
    return static_cast<std::size_t>(blocks::sum_squares_blocks(n)) * sizeof(double);
  }
  void sum_squares(const float* x, std::size_t n, double* result, void* work) {
    blocks::launch_sum_squares(launch_, x, n, result, static_cast<double*>(work));
  }
  template <class... A>
  void nonfinite_reset(A&&... a) {
    blocks::launch_nonfinite_reset(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void nonfinite_scan(A&&... a) {
    blocks::launch_nonfinite_scan(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void convert(A&&... a) {
    blocks::launch_convert(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void cast_rows_scaled(A&&... a) {
    blocks::launch_cast_rows_scaled(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void dropout_keep_mask(A&&... a) {
    blocks::launch_dropout_keep_mask(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void apply_dropout(A&&... a) {
    blocks::launch_apply_dropout(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void mask_by_keep(A&&... a) {
    blocks::launch_mask_by_keep(launch_, std::forward<A>(a)...);
  }

  template <class... A>
  void row_sq_norms(A&&... a) {
    blocks::launch_dora_row_sq_norms(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void dora_norm_rows(A&&... a) {
    blocks::launch_dora_norm_rows(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void dora_factors(A&&... a) {
    blocks::launch_dora_factors(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void dora_dy_v_columns(A&&... a) {
    blocks::launch_dora_dy_v_columns(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void dora_grad_rows(A&&... a) {
    blocks::launch_dora_grad_rows(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void scale_columns(A&&... a) {
    blocks::launch_scale_columns(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void gemm_empty_product(A&&... a) {
    blocks::launch_empty_product(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void adalora_e_chain(A&&... a) {
    blocks::launch_adalora_e_chain(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void adalora_update_importance(A&&... a) {
    blocks::launch_adalora_update_importance(launch_, std::forward<A>(a)...);
  }
  template <class... A>
  void adalora_triplet_scores(A&&... a) {
    blocks::launch_adalora_triplet_scores(launch_, std::forward<A>(a)...);
  }

 private:
  EmulatedLauncher launch_;
};

}  // namespace peftrun::emu
