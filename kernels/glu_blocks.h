// The gated MLP activation's CUDA kernels as block functors (see kernels/block_context.h) and
// their launch code, shared by glu_cuda.cu and the CPU emulator tests. The math is
// activations.h's, in fp32; the activation is a template parameter, so no kernel branches on it.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/activations.h"
#include "kernels/block_context.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

// out[i] = act(gate[i]) * up[i]; pointwise, so out may alias gate or up.
template <class St, GluActivation Act>
struct GluForward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const E> gate, up;
  Span<E> out;
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      out[j] = St::from_float(glu(Act, St::to_float(gate[j]), St::to_float(up[j])));
    }
  }
};

// dgate[i], dup[i] from dout[i], gate[i], up[i]; each index is read before it is written, so
// dgate may alias gate and dup may alias up.
template <class St, GluActivation Act>
struct GluBackward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const E> dout, gate, up;
  Span<E> dgate, dup;
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      float dg = 0.0f, du = 0.0f;
      glu_grad(Act, St::to_float(dout[j]), St::to_float(gate[j]), St::to_float(up[j]), &dg, &du);
      dgate[j] = St::from_float(dg);
      dup[j] = St::from_float(du);
    }
  }
};

template <class Launcher>
void launch_glu_forward(const Launcher& launch, GluActivation act, const void* gate, const void* up,
                        void* out, std::size_t n, DType dtype) {
  if (n == 0) return;
  require(gate && up && out, "glu_forward", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    auto run = [&](auto kernel) {
      kernel.gate = {static_cast<const E*>(gate), n};
      kernel.up = {static_cast<const E*>(up), n};
      kernel.out = {static_cast<E*>(out), n};
      kernel.n = static_cast<std::int64_t>(n);
      launch("glu_forward", pointwise_geometry(static_cast<std::int64_t>(n)), kernel);
    };
    if (act == GluActivation::kSilu) {
      run(GluForward<St, GluActivation::kSilu>{});
    } else {
      run(GluForward<St, GluActivation::kGeluTanh>{});
    }
  });
}

template <class Launcher>
void launch_glu_backward(const Launcher& launch, GluActivation act, const void* dout,
                         const void* gate, const void* up, void* dgate, void* dup, std::size_t n,
                         DType dtype) {
  if (n == 0) return;
  require(dout && gate && up && dgate && dup, "glu_backward", "null tensor");
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    auto run = [&](auto kernel) {
      kernel.dout = {static_cast<const E*>(dout), n};
      kernel.gate = {static_cast<const E*>(gate), n};
      kernel.up = {static_cast<const E*>(up), n};
      kernel.dgate = {static_cast<E*>(dgate), n};
      kernel.dup = {static_cast<E*>(dup), n};
      kernel.n = static_cast<std::int64_t>(n);
      launch("glu_backward", pointwise_geometry(static_cast<std::int64_t>(n)), kernel);
    };
    if (act == GluActivation::kSilu) {
      run(GluBackward<St, GluActivation::kSilu>{});
    } else {
      run(GluBackward<St, GluActivation::kGeluTanh>{});
    }
  });
}

}  // namespace peftrun::blocks
