// DoRA's non-matmul CUDA kernels as block functors (see kernels/block_context.h) and their launch
// code, shared by dora_cuda.cu (which runs the cuBLASLt matmuls around them) and the CPU emulator
// tests. The per-row formulas are dora_math.h's; see dora.h for the algorithm:
//   row_sq_norms   w_sq[j] = ||W_j||^2, one block per row, a double tree sum
//   norm_rows      n_j from ||W_j||^2, P = W A^T and G = A A^T (the rank-r identity), per row
//   factors        g = m / n, s g and g - 1
//   dy_v_columns   per row split, the column sums of dy * v, and dyg = dy * fac, in one pass
//   grad_rows      dB += s g P, dm += colsum / m + (s / n) <B, P>, per row
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/dora_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

inline constexpr int kDoraRowSqThreads = 256;  // row_sq_norms: threads summing one row (2^k)
inline constexpr int kDoraRowThreads = 128;    // norm_rows, grad_rows: one thread per row
inline constexpr int kDoraFactorThreads = 256;
inline constexpr int kDoraColTile = 32;  // dy_v_columns: columns per block (one warp wide)
inline constexpr int kDoraColRows = 8;   // dy_v_columns: rows walked in parallel per block
inline constexpr int kDoraMaxColSplits = 64;

// Row splits of the backward column pass over n rows (deterministic partial sums, added in split
// order by grad_rows).
inline int dora_column_splits(int n) {
  return std::clamp((n + 127) / 128, 1, kDoraMaxColSplits);
}

struct DoraRowSqShared {
  Span<double> scratch;  // block_sum
  PEFTRUN_HD static DoraRowSqShared carve(SharedCarver& c) {
    return {c.take<double>(kDoraRowSqThreads)};
  }
};

// w_sq[j] = sum_k W[j, k]^2, each element read as fp32 and squared and summed in double, one
// block per row j, stored fp32.
template <class St>
struct DoraRowSqNorms {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kDoraRowSqThreads;
  Span<const E> W;   // [out, in]
  Span<float> w_sq;  // [out]
  int in;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = DoraRowSqShared::carve(carver).scratch;
    const std::size_t row = static_cast<std::size_t>(ctx.block_x()) * static_cast<std::size_t>(in);
    double acc = 0.0;
    for (int k = ctx.thread(); k < in; k += ctx.threads()) {
      const double x = St::to_float(W[row + static_cast<std::size_t>(k)]);
      acc += x * x;
    }
    const double total = block_sum(ctx, scratch, acc);
    if (ctx.thread() == 0)
      w_sq[static_cast<std::size_t>(ctx.block_x())] = static_cast<float>(total);
  }
};

// norm[j] = dora_norm_from_parts(w_sq[j], B_j, P_j, G): one thread per row.
struct DoraNormRows {
  static constexpr int kMaxThreads = kDoraRowThreads;
  Span<const float> w_sq;  // [out]
  Span<const float> B, P;  // [out, r]
  Span<const float> G;     // [r, r]
  Span<float> norm;        // [out]
  int out, r;
  float scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const int j = ctx.block_x() * ctx.threads() + ctx.thread();
    if (j >= out) return;
    const std::size_t row = static_cast<std::size_t>(j) * static_cast<std::size_t>(r);
    const std::size_t len = static_cast<std::size_t>(r);
    norm[static_cast<std::size_t>(j)] = dora_norm_from_parts(
        w_sq[static_cast<std::size_t>(j)], subspan(B, row, len), subspan(P, row, len), G, r, scale);
  }
};

// g = m / n, sg = s g and gm1 = g - 1: [out] each, one thread per element.
struct DoraFactors {
  static constexpr int kMaxThreads = kDoraFactorThreads;
  Span<const float> m, n;  // [out]
  Span<float> g, sg, gm1;  // [out]
  int out;
  float scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const int j = ctx.block_x() * ctx.threads() + ctx.thread();
    if (j >= out) return;
    const std::size_t i = static_cast<std::size_t>(j);
    const float f = m[i] / n[i];
    g[i] = f;
    sg[i] = scale * f;
    gm1[i] = f - 1.0f;
  }
};

struct DoraColumnsShared {
  Span<float> acc;  // [kDoraColRows][kDoraColTile]: each thread's partial column sum
  PEFTRUN_HD static DoraColumnsShared carve(SharedCarver& c) {
    return {c.take<float>(static_cast<std::size_t>(kDoraColRows) * kDoraColTile)};
  }
};

// One pass over dy and v ([n, out]): partial[split, j] = sum over the split's rows of
// dy[i, j] v[i, j] (fp32), and dyg[i, j] = dy[i, j] * fac[j]. Block (x, y) owns columns
// [32x, 32x + 32) of split y (rows [y rows_per_split, (y + 1) rows_per_split) clipped to n);
// thread t = 32 ty + tx walks column tx over the split's rows ty, ty + 8, ..., and the eight
// partials of a column are added in ty order by the ty = 0 thread.
template <class St>
struct DoraDyVColumns {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kDoraColTile * kDoraColRows;
  Span<const E> dy, v;    // [n, out]
  Span<const float> fac;  // [out]
  Span<float> partial;    // [splits, out]
  Span<E> dyg;            // [n, out]
  int n, out, rows_per_split;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<float> acc_s = DoraColumnsShared::carve(carver).acc;
    const int tx = ctx.thread() % kDoraColTile, ty = ctx.thread() / kDoraColTile;
    const int j = ctx.block_x() * kDoraColTile + tx;
    const int row0 = ctx.block_y() * rows_per_split;
    const int row1 = imin(n, row0 + rows_per_split);
    const std::size_t cols = static_cast<std::size_t>(out);
    float acc = 0.0f;
    if (j < out) {
      const float f = fac[static_cast<std::size_t>(j)];
      for (int i = row0 + ty; i < row1; i += kDoraColRows) {
        const std::size_t at = static_cast<std::size_t>(i) * cols + static_cast<std::size_t>(j);
        const float d = St::to_float(dy[at]);
        acc += d * St::to_float(v[at]);
        dyg[at] = St::from_float(d * f);
      }
    }
    acc_s[static_cast<std::size_t>(ctx.thread())] = acc;
    ctx.sync();
    if (ty == 0 && j < out) {
      float sum = 0.0f;
      for (int t = 0; t < kDoraColRows; ++t) {
        sum += acc_s[static_cast<std::size_t>(t * kDoraColTile + tx)];
      }
      partial[static_cast<std::size_t>(ctx.block_y()) * cols + static_cast<std::size_t>(j)] = sum;
    }
  }
};

// dm[j] += colsum_j / m_j + (s / n_j) <B_j, P_j> and dB_j += s g_j P_j (dora_row_grads), with
// colsum_j the split partials added in split order: one thread per row.
struct DoraGradRows {
  static constexpr int kMaxThreads = kDoraRowThreads;
  Span<const float> g, m, nrm;  // [out]
  Span<const float> partial;    // [splits, out]
  Span<const float> B, P;       // [out, r]
  Span<float> dB;               // [out, r]
  Span<float> dm;               // [out]
  int splits, out, r;
  float scale;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const int j = ctx.block_x() * ctx.threads() + ctx.thread();
    if (j >= out) return;
    const std::size_t jj = static_cast<std::size_t>(j);
    float colsum = 0.0f;
    for (int t = 0; t < splits; ++t) {
      colsum += partial[static_cast<std::size_t>(t) * static_cast<std::size_t>(out) + jj];
    }
    const std::size_t row = jj * static_cast<std::size_t>(r);
    const std::size_t len = static_cast<std::size_t>(r);
    dm[jj] += dora_row_grads(g[jj], m[jj], nrm[jj], scale, colsum, subspan(B, row, len),
                             subspan(P, row, len), subspan(dB, row, len), r);
  }
};

inline LaunchGeometry dora_rows_geometry(int rows, int threads) {
  LaunchGeometry g;
  g.grid_x = ceil_div(rows, threads);
  g.threads = threads;
  return g;
}

// w_sq [out] fp32 from W [out, in] stored as w_type.
template <class Launcher>
void launch_dora_row_sq_norms(const Launcher& launch, const void* W, DType w_type, int out, int in,
                              float* w_sq) {
  if (out <= 0) return;
  require(in > 0, "row_sq_norms", "in must be > 0");
  require(W && w_sq, "row_sq_norms", "null tensor");
  with_storage(w_type, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    LaunchGeometry g;
    g.grid_x = out;
    g.threads = kDoraRowSqThreads;
    g.smem_bytes = shared_bytes<DoraRowSqShared>();
    const std::size_t rows = static_cast<std::size_t>(out);
    const DoraRowSqNorms<St> k{
        {static_cast<const E*>(W), rows * static_cast<std::size_t>(in)}, {w_sq, rows}, in};
    launch("dora_row_sq_norms", g, k);
  });
}

// norm [out] from w_sq [out], B, P [out, r] and G [r, r] (all fp32).
template <class Launcher>
void launch_dora_norm_rows(const Launcher& launch, const float* w_sq, const float* B,
                           const float* P, const float* G, int out, int r, float scale,
                           float* norm) {
  if (out <= 0) return;
  require(r > 0, "dora_norm_rows", "r must be > 0");
  require(w_sq && B && P && G && norm, "dora_norm_rows", "null tensor");
  const std::size_t o = static_cast<std::size_t>(out), rr = static_cast<std::size_t>(r);
  const DoraNormRows k{{w_sq, o}, {B, o * rr}, {P, o * rr}, {G, rr * rr}, {norm, o}, out, r, scale};
  launch("dora_norm_rows", dora_rows_geometry(out, kDoraRowThreads), k);
}

// g, sg, gm1 [out] from m, n [out].
template <class Launcher>
void launch_dora_factors(const Launcher& launch, const float* m, const float* n, float scale,
                         int out, float* g, float* sg, float* gm1) {
  if (out <= 0) return;
  require(m && n && g && sg && gm1, "dora_factors", "null tensor");
  const std::size_t o = static_cast<std::size_t>(out);
  const DoraFactors k{{m, o}, {n, o}, {g, o}, {sg, o}, {gm1, o}, out, scale};
  launch("dora_factors", dora_rows_geometry(out, kDoraFactorThreads), k);
}

// partial [splits, out] fp32 and dyg [n, out] act from dy, v [n, out] act and fac [out]; the
// n rows are cut into `splits` chunks of ceil(n / splits) rows (trailing chunks may be empty:
// their partials are 0).
template <class Launcher>
void launch_dora_dy_v_columns(const Launcher& launch, const void* dy, const void* v,
                              const float* fac, DType act, int n, int out, int splits,
                              float* partial, void* dyg) {
  if (out <= 0) return;
  require(n >= 0, "dora_dy_v_columns", "n must be >= 0");
  require(splits >= 1 && splits <= kMaxGridYZ, "dora_dy_v_columns", "splits must be in [1, 65535]");
  require(fac && partial && (n == 0 || (dy && v && dyg)), "dora_dy_v_columns", "null tensor");
  with_storage(act, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    LaunchGeometry g;
    g.grid_x = ceil_div(out, kDoraColTile);
    g.grid_y = splits;
    g.threads = kDoraColTile * kDoraColRows;
    g.smem_bytes = shared_bytes<DoraColumnsShared>();
    const std::size_t o = static_cast<std::size_t>(out);
    const std::size_t elems = static_cast<std::size_t>(n) * o;
    const DoraDyVColumns<St> k{{static_cast<const E*>(dy), elems},
                               {static_cast<const E*>(v), elems},
                               {fac, o},
                               {partial, static_cast<std::size_t>(splits) * o},
                               {static_cast<E*>(dyg), elems},
                               n,
                               out,
                               ceil_div(n, splits)};
    launch("dora_dy_v_columns", g, k);
  });
}

// dB [out, r] and dm [out] accumulated from g, m, nrm [out], the split partials [splits, out]
// of launch_dora_dy_v_columns, B and P [out, r] (all fp32).
template <class Launcher>
void launch_dora_grad_rows(const Launcher& launch, const float* g, const float* m, const float* nrm,
                           float scale, const float* partial, int splits, const float* B,
                           const float* P, int out, int r, float* dB, float* dm) {
  if (out <= 0) return;
  require(r > 0 && splits >= 1, "dora_grad_rows", "r and splits must be > 0");
  require(g && m && nrm && partial && B && P && dB && dm, "dora_grad_rows", "null tensor");
  const std::size_t o = static_cast<std::size_t>(out), rr = static_cast<std::size_t>(r);
  const DoraGradRows k{{g, o},
                       {m, o},
                       {nrm, o},
                       {partial, static_cast<std::size_t>(splits) * o},
                       {B, o * rr},
                       {P, o * rr},
                       {dB, o * rr},
                       {dm, o},
                       splits,
                       out,
                       r,
                       scale};
  launch("dora_grad_rows", dora_rows_geometry(out, kDoraRowThreads), k);
}

}  // namespace peftrun::blocks
