// DoRA on the GPU (see dora.h for the math and the matmul plan): the factor g = m / n rides in
// cuBLASLt's alpha vector; dm comes from the saved v = g * (x~ W^T) and P = dy^T xa. The
// matmuls are cuBLASLt's; the kernels between them are dora_blocks.h's, launched by
// CudaLauncher (the CPU emulator runs the same bodies).
#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "kernels/convert.h"
#include "kernels/cuda_launch.cuh"
#include "kernels/dora.h"
#include "kernels/dora_blocks.h"
#include "kernels/dropout.h"
#include "kernels/gemm_plan.h"
#include "kernels/lora_core_cuda.h"

namespace peftrun::cuda {
namespace {

using detail::make_gemm;

std::size_t sz(int a, int b) {
  return static_cast<std::size_t>(a) * static_cast<std::size_t>(b);
}

struct NormWork {
  void* A_w = nullptr;  // [r, in] w_type (fp32: A itself)
  float* P = nullptr;   // [out, r]
  float* G = nullptr;   // [r, r]
};

NormWork carve_norm(WorkspaceCarver& w, int out, int in, int r, DType w_type) {
  NormWork k;
  if (w_type != DType::kF32) k.A_w = w.take_bytes(sz(r, in) * dtype_size(w_type));
  k.P = w.take<float>(sz(out, r));
  k.G = w.take<float>(sz(r, r));
  return k;
}

struct DoraWork {
  float *g = nullptr, *sg = nullptr, *gm1 = nullptr;  // [out]
  detail::ActAdapterSlots act;                        // A, B in act (16-bit only)
  void* Bg = nullptr;                                 // diag(g) B [out, r] act
  // forward only
  void* x_rest = nullptr;  // x - x~ [n, in] act (dropout)
  float* z = nullptr;      // x~ W^T [n, out] fp32 (the alpha-vector fallback)
  // backward only
  float* P = nullptr;        // dy^T xa [out, r]
  float* partial = nullptr;  // [splits, out]
  void* dxa = nullptr;       // [n, r] act
  void* dyg = nullptr;       // dy * g (dy * (g - 1) with dropout) [n, out] act
  int splits = 1;
};

// Common scratch, then forward-only and backward-only parts overlapping each other.
DoraWork carve_dora(void* base, int n, int in, int out, int r, DType act, bool dropout,
                    std::size_t* total_bytes) {
  WorkspaceCarver w(base);
  DoraWork k;
  k.g = w.take<float>(static_cast<std::size_t>(out));
  k.sg = w.take<float>(static_cast<std::size_t>(out));
  k.gm1 = w.take<float>(static_cast<std::size_t>(out));
  k.act = detail::carve_act_adapter(w, in, out, r, act, false, false);
  const std::size_t es = dtype_size(act);
  k.Bg = w.take_bytes(sz(out, r) * es);
  WorkspaceCarver fwd = w.fork();
  if (dropout) k.x_rest = fwd.take_bytes(sz(n, in) * es);
  k.z = fwd.take<float>(sz(n, out));
  WorkspaceCarver bwd = w.fork();
  k.splits = blocks::dora_column_splits(n);
  k.P = bwd.take<float>(sz(out, r));
  k.partial = bwd.take<float>(sz(k.splits, out));
  k.dxa = bwd.take_bytes(sz(n, r) * es);
  k.dyg = bwd.take_bytes(sz(n, out) * es);
  if (total_bytes) *total_bytes = std::max(fwd.bytes(), bwd.bytes());
  return k;
}

void validate_dora(const DoraLinearArgs& a, const char* op) {
  detail::validate_lora_args(a.lora, op);
  if (!a.magnitude || !a.weight_norm || !a.v || !a.work) {
    throw std::invalid_argument(std::string(op) +
                                ": magnitude, weight_norm, v and work must be set");
  }
}

void launch_factors(const DoraLinearArgs& a, const DoraWork& k, Stream stream) {
  dora_steps::factors(a.magnitude, a.weight_norm, a.lora.scale, a.lora.out, k.g, k.sg, k.gm1,
                      stream);
}

// D = vec * (op(A) op(B)) (+ beta C + bias) through the alpha vector, or, where cuBLASLt has no
// algorithm for that pointer mode, `fallback` (reported once).
template <typename Fallback>
void gemm_alpha_vector(BlasLt& lt, const GemmArgs& g, const char* what, Fallback&& fallback,
                       Stream stream) {
  if (gemm_supported(lt, g)) {
    try {
      gemm(lt, g, stream);
      return;
    } catch (const std::runtime_error&) {
      // A launch refusal marks the plan unsupported (then fall back); anything else is an error.
      if (gemm_supported(lt, g)) throw;
    }
  }
  lt.report_fallback(std::string("DoRA ") + what +
                     ": cuBLASLt offers no alpha-vector algorithm for " +
                     describe(make_gemm_key(g, 0)) + "; using the fused fallback");
  fallback();
}

}  // namespace

namespace dora_steps {

void norm_rows(const float* w_sq, const float* B, const float* P, const float* G, int out, int r,
               float scale, float* norm, Stream stream) {
  blocks::launch_dora_norm_rows(CudaLauncher(stream), w_sq, B, P, G, out, r, scale, norm);
}

void factors(const float* m, const float* n, float scale, int out, float* g, float* sg, float* gm1,
             Stream stream) {
  blocks::launch_dora_factors(CudaLauncher(stream), m, n, scale, out, g, sg, gm1);
}

void dy_v_columns(const void* dy, const void* v, const float* fac, DType act, int n, int out,
                  int splits, float* partial, void* dyg, Stream stream) {
  blocks::launch_dora_dy_v_columns(CudaLauncher(stream), dy, v, fac, act, n, out, splits, partial,
                                   dyg);
}

void grad_rows(const float* g, const float* m, const float* nrm, float scale, const float* partial,
               int splits, const float* B, const float* P, int out, int r, float* dB, float* dm,
               Stream stream) {
  blocks::launch_dora_grad_rows(CudaLauncher(stream), g, m, nrm, scale, partial, splits, B, P, out,
                                r, dB, dm);
}

}  // namespace dora_steps

void row_sq_norms(const void* W, DType w_type, int out, int in, float* w_sq, Stream stream) {
  blocks::launch_dora_row_sq_norms(CudaLauncher(stream), W, w_type, out, in, w_sq);
}

std::size_t dora_norm_workspace_bytes(int out, int in, int r, DType w_type) {
  WorkspaceCarver w;
  carve_norm(w, out, in, r, w_type);
  return w.bytes();
}

void dora_weight_norm(BlasLt& lt, const void* W, DType w_type, const float* w_sq, const float* A,
                      const float* B, int out, int in, int r, float scale, float* norm, void* work,
                      Stream stream) {
  if (out <= 0 || in <= 0 || r <= 0) {
    throw std::invalid_argument("cuda::dora_weight_norm: out, in and r must be > 0");
  }
  WorkspaceCarver w(work);
  NormWork k = carve_norm(w, out, in, r, w_type);
  const void* A_w = A;
  if (w_type != DType::kF32) {
    cast_rows_scaled(A, nullptr, r, in, w_type, k.A_w, stream);
    A_w = k.A_w;
  }
  // P = W A^T [out, r] (the only product touching W); G = A A^T [r, r] in full fp32.
  gemm(lt,
       make_gemm(Trans::kNo, Trans::kYes, out, r, in, W, in, A_w, in, w_type, k.P, r, DType::kF32),
       stream);
  gemm(lt,
       make_gemm(Trans::kNo, Trans::kYes, r, r, in, A, in, A, in, DType::kF32, k.G, r, DType::kF32),
       stream);
  dora_steps::norm_rows(w_sq, B, k.P, k.G, out, r, scale, norm, stream);
}

std::size_t dora_linear_workspace_bytes(int n, int in, int out, int r, DType act, bool dropout) {
  std::size_t total = 0;
  carve_dora(nullptr, n, in, out, r, act, dropout, &total);
  return total;
}

void dora_linear_forward(BlasLt& lt, const DoraLinearArgs& a, const void* x, void* y,
                         Stream stream) {
  validate_dora(a, "cuda::dora_linear_forward");
  const LoraLinearArgs& l = a.lora;
  const DType t = l.act;
  const DoraWork k = carve_dora(a.work, l.n, l.in, l.out, l.r, t, l.keep != nullptr, nullptr);
  launch_factors(a, k, stream);
  const void* A_act = l.A;
  const void* B_act = l.B;
  if (t != DType::kF32) {
    cast_rows_scaled(l.A, nullptr, l.r, l.in, t, k.act.A, stream);
    cast_rows_scaled(l.B, nullptr, l.out, l.r, t, k.act.B, stream);
    A_act = k.act.A;
    B_act = k.act.B;
  }
  const void* xin = x;  // x~ [n, in]
  if (l.keep) {
    apply_dropout(x, l.keep, l.keep_scale, sz(l.n, l.in), t, l.x_drop, k.x_rest, stream);
    xin = l.x_drop;
  }
  // xa = x~ A^T [n, r]
  gemm(lt,
       make_gemm(Trans::kNo, Trans::kYes, l.n, l.r, l.in, xin, l.in, A_act, l.in, t, l.xa, l.r, t),
       stream);

  // v = g * (x~ W^T) [n, out], saved for dm.
  GemmArgs base =
      make_gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.in, xin, l.in, l.W, l.in, t, a.v, l.out, t);
  base.alpha_vec = k.g;
  gemm_alpha_vector(
      lt, base, "v = g * (x W^T)",
      [&] {
        // The product in fp32, then v = g * z rounded once. (Scaling the rounded 16-bit product
        // instead lost g entirely while |g - 1| was below half an ulp, 2^-9 in bf16: DoRA
        // starts at g = 1 and AdamW moves m by ~lr per step. Seen on an H200, 2026-12-04.)
        GemmArgs plain = base;
        plain.alpha_vec = nullptr;
        plain.D = k.z;
        plain.d_type = DType::kF32;
        gemm(lt, plain, stream);
        scale_columns(k.z, a.v, t, l.n, l.out, l.out, k.g, stream);
      },
      stream);

  // The LoRA term (s g) * (xa B^T), accumulated onto C (v without dropout, y with it).
  auto lora_term = [&](const void* C, const void* bias) {
    GemmArgs up =
        make_gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.r, l.xa, l.r, B_act, l.r, t, y, l.out, t);
    up.alpha_vec = k.sg;
    up.beta = 1.0f;
    up.C = C;
    up.bias = bias;
    gemm_alpha_vector(
        lt, up, "y += (s g) * (xa B^T)",
        [&] {
          // s xa (diag(g) B)^T: B's rows scaled instead of the output columns ([out, r], small).
          cast_rows_scaled(l.B, k.g, l.out, l.r, t, k.Bg, stream);
          GemmArgs scaled_b = up;
          scaled_b.alpha_vec = nullptr;
          scaled_b.alpha = l.scale;
          scaled_b.B = k.Bg;
          gemm(lt, scaled_b, stream);
        },
        stream);
  };

  if (!l.keep) {
    lora_term(a.v, l.bias);  // y = (s g) * (xa B^T) + v + b
    return;
  }
  // y = (x - x~) W^T + v + b, then y += (s g) * (xa B^T).
  GemmArgs rest = make_gemm(Trans::kNo, Trans::kYes, l.n, l.out, l.in, k.x_rest, l.in, l.W, l.in, t,
                            y, l.out, t);
  rest.beta = 1.0f;
  rest.C = a.v;
  rest.bias = l.bias;
  gemm(lt, rest, stream);
  lora_term(nullptr, nullptr);
}

void dora_linear_backward(BlasLt& lt, const DoraLinearArgs& a, const void* x, const void* dy,
                          void* dx, float* dA, float* dB, float* dm, Stream stream) {
  validate_dora(a, "cuda::dora_linear_backward");
  const LoraLinearArgs& l = a.lora;
  const DType t = l.act;
  const DoraWork k = carve_dora(a.work, l.n, l.in, l.out, l.r, t, l.keep != nullptr, nullptr);
  launch_factors(a, k, stream);
  const void* A_act = l.A;
  if (t != DType::kF32) {
    cast_rows_scaled(l.A, nullptr, l.r, l.in, t, k.act.A, stream);
    A_act = k.act.A;
  }
  cast_rows_scaled(l.B, k.g, l.out, l.r, t, k.Bg, stream);  // diag(g) B
  const void* xin = l.keep ? l.x_drop : x;                  // x~ [n, in]

  // P = dy^T xa [out, r] fp32
  gemm(lt,
       make_gemm(Trans::kYes, Trans::kNo, l.out, l.r, l.n, dy, l.out, l.xa, l.r, t, k.P, l.r,
                 DType::kF32),
       stream);
  // colsum(dy * v) partials and dyg = dy * g (dy * (g - 1) with dropout) in one pass.
  dora_steps::dy_v_columns(dy, a.v, l.keep ? k.gm1 : k.g, t, l.n, l.out, k.splits, k.partial, k.dyg,
                           stream);
  // dB += s g P, dm += colsum / m + (s / n) <B, P>, row by row.
  dora_steps::grad_rows(k.g, a.magnitude, a.weight_norm, l.scale, k.partial, k.splits, l.B, k.P,
                        l.out, l.r, dB, dm, stream);
  // dxa = s (dy g) B = s dy (diag(g) B) [n, r]
  GemmArgs gx =
      make_gemm(Trans::kNo, Trans::kNo, l.n, l.r, l.out, dy, l.out, k.Bg, l.r, t, k.dxa, l.r, t);
  gx.alpha = l.scale;
  gemm(lt, gx, stream);
  // dA += dxa^T x~ [r, in]
  GemmArgs ga = make_gemm(Trans::kYes, Trans::kNo, l.r, l.in, l.n, k.dxa, l.r, xin, l.in, t, dA,
                          l.in, DType::kF32);
  ga.beta = 1.0f;
  gemm(lt, ga, stream);
  if (!dx) return;

  // dx = dyg W + dxa A; with dropout that is d/dx~, masked, plus the clean path dy W.
  gemm(lt,
       make_gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.out, k.dyg, l.out, l.W, l.in, t, dx, l.in, t),
       stream);
  GemmArgs through_a =
      make_gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.r, k.dxa, l.r, A_act, l.in, t, dx, l.in, t);
  through_a.beta = 1.0f;
  gemm(lt, through_a, stream);
  if (!l.keep) return;
  mask_by_keep(dx, l.keep, l.keep_scale, sz(l.n, l.in), t, stream);
  GemmArgs clean =
      make_gemm(Trans::kNo, Trans::kNo, l.n, l.in, l.out, dy, l.out, l.W, l.in, t, dx, l.in, t);
  clean.beta = 1.0f;
  gemm(lt, clean, stream);
}

}  // namespace peftrun::cuda
