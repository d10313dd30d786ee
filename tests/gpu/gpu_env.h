// The GPU runner of the parity cases (see tests/gpu/parity_support.h): device buffers and the
// public peftrun::cuda:: API on the default stream.
#pragma once

#include <cstddef>
#include <utility>
#include <vector>

#include "kernels/adalora.h"
#include "kernels/attention.h"
#include "kernels/cross_entropy.h"
#include "kernels/cuda_memory.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"
#include "tests/gpu/gpu_test_support.h"

namespace peftrun::gpu_testing {

struct GpuEnv {
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
  void swiglu_forward(A&&... a) {
    cuda::swiglu_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void swiglu_backward(A&&... a) {
    cuda::swiglu_backward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void embedding_forward(A&&... a) {
    cuda::embedding_forward(std::forward<A>(a)..., nullptr);
  }
  template <class... A>
  void add_inplace(A&&... a) {
    cuda::add_inplace(std::forward<A>(a)..., nullptr);
  }
  // params_elems bounds the emulator's checks; the device API does not take it.
  void adalora_orth_reg(const float* params, float* grads, std::size_t /*params_elems*/,
                        const AdaLoraOrthMatrix* mats, int count, int max_rank, float weight,
                        double* norms) {
    cuda::adalora_orth_reg(params, grads, mats, count, max_rank, weight, norms, nullptr);
  }
  // data_elems bounds the emulator's checks; the device API does not take it.
  void zero_masked_rows(float* data, std::size_t /*data_elems*/, const std::uint64_t* offsets,
                        const float* mask, int groups, int per_group) {
    cuda::zero_masked_rows(data, offsets, mask, groups, per_group, nullptr);
  }
};

}  // namespace peftrun::gpu_testing
