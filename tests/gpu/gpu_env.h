// The GPU runner of the parity cases (see tests/gpu/parity_support.h): device buffers and the
// public peftrun::cuda:: API on the default stream.
#pragma once

#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "kernels/adalora.h"
#include "kernels/adamw.h"
#include "kernels/attention.h"
#include "kernels/convert.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_memory.h"
#include "kernels/dora.h"
#include "kernels/dropout.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/glu.h"
#include "kernels/nonfinite.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "tests/gpu/gpu_test_support.h"

namespace peftrun::gpu_testing {

class GpuEnv {
 public:
  template <class T>
  using Buffer = cuda::DeviceBuffer<T>;

  template <class T>
  Buffer<T> upload(const std::vector<T>& v) {
    return to_device(v);
  }
  template <class T>
  Buffer<T> poisoned(std::size_t n) {
    return gpu_testing::poisoned<T>(n);
  }
  template <class T>
  std::vector<T> download(const Buffer<T>& b) {
    return to_host(b);  // synchronizes first
  }

  template <class... A>
  void attention_forward(A&&... a) {
    cuda::attention_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void attention_backward(A&&... a) {
    cuda::attention_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void cross_entropy_forward_backward(A&&... a) {
    cuda::cross_entropy_forward_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void rmsnorm_forward(A&&... a) {
    cuda::rmsnorm_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void rmsnorm_backward(A&&... a) {
    cuda::rmsnorm_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void rope_forward(A&&... a) {
    cuda::rope_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void rope_backward(A&&... a) {
    cuda::rope_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void glu_forward(A&&... a) {
    cuda::glu_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void glu_backward(A&&... a) {
    cuda::glu_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void embedding_forward(A&&... a) {
    cuda::embedding_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void add_inplace(A&&... a) {
    cuda::add_inplace(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void scale(A&&... a) {
    cuda::scale(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void adamw_step(A&&... a) {
    cuda::adamw_step(std::forward<A>(a)..., nullptr);
  }
  std::size_t sum_squares_workspace_bytes(std::size_t n) const {
    return cuda::sum_squares_workspace_bytes(n);
  }
  template <class... A>
  void sum_squares(A&&... a) {
    cuda::sum_squares(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void nonfinite_reset(A&&... a) {
    cuda::nonfinite_reset(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void nonfinite_scan(A&&... a) {
    cuda::nonfinite_scan(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void convert(A&&... a) {
    cuda::convert(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void cast_rows_scaled(A&&... a) {
    cuda::cast_rows_scaled(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void dropout_keep_mask(A&&... a) {
    cuda::dropout_keep_mask(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void apply_dropout(A&&... a) {
    cuda::apply_dropout(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void mask_by_keep(A&&... a) {
    cuda::mask_by_keep(std::forward<A>(a)..., nullptr);
  }
  // params_elems bounds the emulator's checks; the device API does not take it.
  void adalora_orth_reg(const float* params, float* grads, std::size_t /*params_elems*/,
                        const AdaLoraOrthMatrix* mats, int count, int max_rank, float weight,
                        double* norms) {
    cuda::adalora_orth_reg(params, grads, mats, count, max_rank, weight, norms, nullptr);
  }
  template <class... A>
  void adalora_e_chain(A&&... a) {
    cuda::adalora_e_chain(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void adalora_update_importance(A&&... a) {
    cuda::adalora_update_importance(std::forward<A>(a)..., nullptr);
  }
  // flat_elems bounds the emulator's checks; the device API does not take it.
  void adalora_triplet_scores(const float* ipt_ema, const float* unc_ema,
                              std::size_t /*flat_elems*/, const AdaLoraModuleView& m,
                              float* scores) {
    cuda::adalora_triplet_scores(ipt_ema, unc_ema, m, scores, nullptr);
  }
  // data_elems bounds the emulator's checks; the device API does not take it.
  void zero_masked_rows(float* data, std::size_t /*data_elems*/, const std::uint64_t* offsets,
                        const float* mask, int groups, int per_group) {
    cuda::zero_masked_rows(data, offsets, mask, groups, per_group, nullptr);
  }
  template <class... A>
  void row_sq_norms(A&&... a) {
    cuda::row_sq_norms(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void dora_norm_rows(A&&... a) {
    cuda::dora_steps::norm_rows(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void dora_factors(A&&... a) {
    cuda::dora_steps::factors(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void dora_dy_v_columns(A&&... a) {
    cuda::dora_steps::dy_v_columns(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void dora_grad_rows(A&&... a) {
    cuda::dora_steps::grad_rows(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void scale_columns(A&&... a) {
    cuda::scale_columns(std::forward<A>(a)..., nullptr);
  }
  // K = 0 through cuda::gemm, the path that runs the empty-product kernel (no cuBLASLt call, so
  // a context without workspace, made on first use, will do).
  void gemm_empty_product(void* D, const void* C, DType d_type, int rows, int cols, int ldd,
                          float beta, const void* bias) {
    if (!lt_) lt_ = std::make_unique<cuda::BlasLt>(nullptr, 0);
    cuda::GemmArgs g;
    g.M = rows;
    g.N = cols;
    g.K = 0;
    g.ab_type = d_type;
    g.D = D;
    g.ldd = ldd;
    g.d_type = d_type;
    g.C = C;
    g.beta = beta;
    g.bias = bias;
    cuda::gemm(*lt_, g, nullptr);
  }

 private:
  std::unique_ptr<cuda::BlasLt> lt_;
};

}  // namespace peftrun::gpu_testing
