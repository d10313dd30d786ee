// Frozen linear + LoRA branch on the GPU (see lora_linear.h): the CPU file's GEMM sequence as
// cuBLASLt matmuls, with the bias in the base GEMM's epilogue and the branch accumulated into
// the same output (beta = 1).
#include <cstddef>
#include <stdexcept>
#include <string>

#include "kernels/convert.h"
#include "kernels/dropout.h"
#include "kernels/lora_core_cuda.h"

namespace peftrun::cuda {
namespace detail {

void validate_lora_args(const LoraLinearArgs& a, const char* op) {
  auto fail = [op](const std::string& what) {
    throw std::invalid_argument(std::string(op) + ": " + what);
  };
  if (a.n < 0 || a.in <= 0 || a.out <= 0 || a.r <= 0) {
    fail("shape n=" + std::to_string(a.n) + " in=" + std::to_string(a.in) +
         " out=" + std::to_string(a.out) + " r=" + std::to_string(a.r) +
         " (n >= 0, in, out, r > 0 expected)");
  }
  if (!a.W || !a.A || !a.B) fail("W, A and B must be set");
  if (!a.xa) fail("xa (saved [n, r]) must be set");
  if (a.keep && !a.x_drop) fail("dropout needs x_drop ([n, in], saved)");
}

ActAdapterSlots carve_act_adapter(WorkspaceCarver& w, int in, int out, int r, DType act,
                                  bool always_A, bool always_B) {
  const std::size_t es = dtype_size(act);
  const bool cast = act != DType::kF32;
  ActAdapterSlots s;
  if (cast || always_A) s.A = w.take_bytes(static_cast<std::size_t>(r) * in * es);
  if (cast || always_B) s.B = w.take_bytes(static_cast<std::size_t>(out) * r * es);
  return s;
}

void lora_forward_core(BlasLt& lt, const LoraLinearArgs& a, const ActAdapter& ad, const void* x,
                       void* y, Stream stream) {
  const DType t = a.act;
  const void* xin = x;
  if (a.keep) {
    apply_dropout(x, a.keep, a.keep_scale, static_cast<std::size_t>(a.n) * a.in, t, a.x_drop,
                  nullptr, stream);
    xin = a.x_drop;
  }
  // y = x W^T + bias: [n, out] (bias in the epilogue)
  GemmArgs base =
      make_gemm(Trans::kNo, Trans::kYes, a.n, a.out, a.in, x, a.in, a.W, a.in, t, y, a.out, t);
  base.bias = a.bias;
  gemm(lt, base, stream);
  // xa = x~ A^T: [n, r]
  gemm(lt,
       make_gemm(Trans::kNo, Trans::kYes, a.n, a.r, a.in, xin, a.in, ad.A, a.in, t, a.xa, a.r, t),
       stream);
  // y += s xa B^T
  GemmArgs up =
      make_gemm(Trans::kNo, Trans::kYes, a.n, a.out, a.r, a.xa, a.r, ad.B, a.r, t, y, a.out, t);
  up.alpha = a.scale;
  up.beta = 1.0f;
  gemm(lt, up, stream);
}

void lora_backward_core(BlasLt& lt, const LoraLinearArgs& a, const ActAdapter& ad, const void* x,
                        const void* dy, void* dx, float* dA, float dA_beta, float* dB, void* dxa,
                        Stream stream) {
  // n = 0 needs no special case: the gradient matmuls then have K = 0 and reduce to
  // D = beta * C, and the others have no rows.
  const DType t = a.act;
  const void* xin = a.keep ? a.x_drop : x;  // x~ as forward used it: [n, in]
  // dB += s dy^T xa : [out, r] fp32
  GemmArgs gb = make_gemm(Trans::kYes, Trans::kNo, a.out, a.r, a.n, dy, a.out, a.xa, a.r, t, dB,
                          a.r, DType::kF32);
  gb.alpha = a.scale;
  gb.beta = 1.0f;
  gemm(lt, gb, stream);
  // dxa = s dy B : [n, r]
  GemmArgs gx =
      make_gemm(Trans::kNo, Trans::kNo, a.n, a.r, a.out, dy, a.out, ad.B, a.r, t, dxa, a.r, t);
  gx.alpha = a.scale;
  gemm(lt, gx, stream);
  // dA = dA_beta dA + dxa^T x~ : [r, in] fp32
  GemmArgs ga = make_gemm(Trans::kYes, Trans::kNo, a.r, a.in, a.n, dxa, a.r, xin, a.in, t, dA, a.in,
                          DType::kF32);
  ga.beta = dA_beta;
  gemm(lt, ga, stream);
  if (!dx) return;
  GemmArgs through_w =
      make_gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.out, dy, a.out, a.W, a.in, t, dx, a.in, t);
  GemmArgs through_a =
      make_gemm(Trans::kNo, Trans::kNo, a.n, a.in, a.r, dxa, a.r, ad.A, a.in, t, dx, a.in, t);
  if (a.keep) {
    // dx = dy W + keep_scale keep * (dxa A): the branch term first, masked in place, then the
    // base GEMM accumulates on top (beta = 1), as the CPU kernel does.
    gemm(lt, through_a, stream);
    mask_by_keep(dx, a.keep, a.keep_scale, static_cast<std::size_t>(a.n) * a.in, t, stream);
    through_w.beta = 1.0f;
    gemm(lt, through_w, stream);
  } else {
    gemm(lt, through_w, stream);
    through_a.beta = 1.0f;
    gemm(lt, through_a, stream);
  }
}

}  // namespace detail

namespace {

struct LoraWork {
  detail::ActAdapterSlots act;
  void* dxa = nullptr;
};

LoraWork carve(WorkspaceCarver& w, int n, int in, int out, int r, DType act) {
  LoraWork k;
  k.act = detail::carve_act_adapter(w, in, out, r, act, false, false);
  k.dxa = w.take_bytes(static_cast<std::size_t>(n) * r * dtype_size(act));
  return k;
}

detail::ActAdapter cast_adapter(const LoraLinearArgs& a, const LoraWork& k, Stream stream) {
  if (a.act == DType::kF32) return {a.A, a.B};
  cast_rows_scaled(a.A, nullptr, a.r, a.in, a.act, k.act.A, stream);
  cast_rows_scaled(a.B, nullptr, a.out, a.r, a.act, k.act.B, stream);
  return {k.act.A, k.act.B};
}

}  // namespace

std::size_t lora_linear_workspace_bytes(int n, int in, int out, int r, DType act) {
  WorkspaceCarver w;
  carve(w, n, in, out, r, act);
  return w.bytes();
}

void lora_linear_forward(BlasLt& lt, const LoraLinearArgs& a, const void* x, void* y,
                         Stream stream) {
  detail::validate_lora_args(a, "cuda::lora_linear_forward");
  WorkspaceCarver w(a.work);
  const LoraWork k = carve(w, a.n, a.in, a.out, a.r, a.act);
  detail::lora_forward_core(lt, a, cast_adapter(a, k, stream), x, y, stream);
}

void lora_linear_backward(BlasLt& lt, const LoraLinearArgs& a, const void* x, const void* dy,
                          void* dx, float* dA, float* dB, Stream stream) {
  detail::validate_lora_args(a, "cuda::lora_linear_backward");
  WorkspaceCarver w(a.work);
  const LoraWork k = carve(w, a.n, a.in, a.out, a.r, a.act);
  // A and B are cast again: the workspace may have served other layers since forward.
  detail::lora_backward_core(lt, a, cast_adapter(a, k, stream), x, dy, dx, dA, 1.0f, dB, k.dxa,
                             stream);
}

}  // namespace peftrun::cuda
