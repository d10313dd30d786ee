// AdaLoRA's CUDA kernels as block functors (see kernels/block_context.h) and their launch code,
// shared by adalora_cuda.cu and the CPU emulator tests: the chain rule through A~ = E * A, the
// allocator's importance EMAs (importance_element, bit-identical to the CPU), the triplet scores
// (triplet_score over double sums; these row reductions are block_sum's fixed tree over 256
// threads), and, below them, the orthogonality regulariser.
//
// The orthogonality regulariser:
// One launch for all matrices, one block per matrix (grid_x = count). With k the long index
// (in for A, out for B), i, j < d the rank indices and P(k, i) = A[i, k] resp. B[k, i]:
//   G[i, j] = sum_k P(k, i) P(k, j)      (A A^T for A, B^T B for B), C = G - I
//   grad(k, i) += alpha sum_j C[i, j] P(k, j),  alpha = 2 weight / ||C||
// which is 2 C P / ||C|| for A and 2 P C / ||C|| for B (C is symmetric: G[i, j] and G[j, i] are
// the same products summed in the same order, so exactly symmetric here too).
//
// The long dimension is walked in tiles of P staged in shared memory ([kt, d] floats, rows
// padded to d + 1 so that neither a row nor a column of the tile hits one bank twice). Every
// Gram entry is accumulated in double by a fixed thread (with d * d < threads, `slices`
// threads share an entry, each taking every slices-th row of a tile, and their partials are
// added in slice order at the end), so the result does not depend on the thread schedule. The
// sum of squares of C is a block_sum in double. Then the tiles are staged again and each thread
// adds the increment of the grad elements it owns, in the order that makes the global reads
// and writes of the tile coalesced; it reads C[j, i] for C[i, j] (equal bits), which is the
// consecutive entry across a warp for B and the same entry (a broadcast) for A.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/adalora.h"
#include "kernels/adalora_math.h"
#include "kernels/block_context.h"

namespace peftrun::blocks {

inline constexpr int kAdaLoraRowThreads = 256;  // a power of two (block_sum)

// The block_sum scratch of the row kernels.
struct AdaLoraRowShared {
  Span<double> scratch;
  PEFTRUN_HD static AdaLoraRowShared carve(SharedCarver& c) {
    return {c.take<double>(kAdaLoraRowThreads)};
  }
};

inline LaunchGeometry adalora_row_geometry(int rows) {
  LaunchGeometry g;
  g.grid_x = rows;
  g.threads = kAdaLoraRowThreads;
  g.smem_bytes = shared_bytes<AdaLoraRowShared>();
  return g;
}

// Row k = block_x of the chain rule through A~[k, :] = E[k] A[k, :]:
//   dA[k, :] += E[k] dA~[k, :];  dE[k] += sum_j dA~[k, j] A[k, j]  (products and sum in double)
struct AdaLoraEChain {
  static constexpr int kMaxThreads = kAdaLoraRowThreads;
  Span<const float> dA_scaled, A;  // [r, in]
  Span<const float> E;             // [r]
  Span<float> dA;                  // [r, in]
  Span<float> dE;                  // [r]
  int in;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = AdaLoraRowShared::carve(carver).scratch;
    const std::size_t k = static_cast<std::size_t>(ctx.block_x());
    const std::size_t row = k * static_cast<std::size_t>(in);
    const float e = E[k];
    double acc = 0.0;
    for (int j = ctx.thread(); j < in; j += ctx.threads()) {
      const float g = dA_scaled[row + j];
      dA[row + j] += e * g;
      acc += static_cast<double>(g) * static_cast<double>(A[row + j]);
    }
    const double total = block_sum(ctx, scratch, acc);
    if (ctx.thread() == 0) dE[k] += static_cast<float>(total);
  }
};

// importance_element over n flat elements (grid-stride).
struct AdaLoraImportance {
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const float> p, g;
  Span<float> ipt, unc;
  std::int64_t n;
  ImportanceCoeffs<float> c;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      const std::size_t j = static_cast<std::size_t>(i);
      importance_element(p[j], g[j], ipt[j], unc[j], c);
    }
  }
};

// One block per triplet k = block_x: the element scores of A's row k and of B's column k, each
// summed in double over the block, then triplet_score.
struct AdaLoraTripletScores {
  static constexpr int kMaxThreads = kAdaLoraRowThreads;
  Span<const float> ipt, unc;  // the flat buffers
  AdaLoraModuleView m;
  Span<float> scores;  // [m.r]

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<double> scratch = AdaLoraRowShared::carve(carver).scratch;
    const std::size_t k = static_cast<std::size_t>(ctx.block_x());
    const std::size_t r = static_cast<std::size_t>(m.r);
    double sa = 0.0, sb = 0.0;
    for (int j = ctx.thread(); j < m.in; j += ctx.threads()) {
      const std::size_t o = m.a + k * static_cast<std::size_t>(m.in) + j;  // A[k, j]
      sa += static_cast<double>(mul_rn(ipt[o], unc[o]));
    }
    for (int j = ctx.thread(); j < m.out; j += ctx.threads()) {
      const std::size_t o = m.b + static_cast<std::size_t>(j) * r + k;  // B[j, k]
      sb += static_cast<double>(mul_rn(ipt[o], unc[o]));
    }
    const double sum_a = block_sum(ctx, scratch, sa);
    const double sum_b = block_sum(ctx, scratch, sb);
    if (ctx.thread() == 0) {
      const std::size_t oe = m.e + k;
      scores[k] = triplet_score(ipt[oe], unc[oe], sum_a, m.in, sum_b, m.out);
    }
  }
};

// dA [r, in] and dE [r] accumulated from dA~ [r, in], A [r, in] and E [r].
template <class Launcher>
void launch_adalora_e_chain(const Launcher& launch, const float* dA_scaled, const float* A,
                            const float* E, int r, int in, float* dA, float* dE) {
  require(r >= 0 && in >= 0, "adalora_e_chain", "r and in must be >= 0");
  if (r == 0) return;
  require(dA_scaled && A && E && dA && dE, "adalora_e_chain", "null tensor");
  const std::size_t n = static_cast<std::size_t>(r) * static_cast<std::size_t>(in);
  const std::size_t nr = static_cast<std::size_t>(r);
  const AdaLoraEChain k{{dA_scaled, n}, {A, n}, {E, nr}, {dA, n}, {dE, nr}, in};
  launch("adalora_e_chain", adalora_row_geometry(r), k);
}

template <class Launcher>
void launch_adalora_update_importance(const Launcher& launch, const float* p, const float* g,
                                      float* ipt_ema, float* unc_ema, std::size_t n, double beta1,
                                      double beta2, double grad_scale) {
  if (n == 0) return;
  require(p && g && ipt_ema && unc_ema, "adalora_update_importance", "null tensor");
  const AdaLoraImportance k{{p, n},
                            {g, n},
                            {ipt_ema, n},
                            {unc_ema, n},
                            static_cast<std::int64_t>(n),
                            importance_coeffs<float>(beta1, beta2, grad_scale)};
  launch("adalora_update_importance", pointwise_geometry(static_cast<std::int64_t>(n)), k);
}

// Elements of the flat buffers the module m reaches (its A, B and E end before this).
inline std::size_t adalora_module_extent(const AdaLoraModuleView& m) {
  const std::size_t r = static_cast<std::size_t>(m.r);
  const std::size_t ea = m.a + r * static_cast<std::size_t>(m.in);
  const std::size_t eb = m.b + static_cast<std::size_t>(m.out) * r;
  const std::size_t ee = m.e + r;
  return ea > eb ? (ea > ee ? ea : ee) : (eb > ee ? eb : ee);
}

// ipt_ema / unc_ema: the flat buffers of flat_elems floats, scores [m.r].
template <class Launcher>
void launch_adalora_triplet_scores(const Launcher& launch, const float* ipt_ema,
                                   const float* unc_ema, std::size_t flat_elems,
                                   const AdaLoraModuleView& m, float* scores) {
  if (m.r <= 0) return;
  require(m.in > 0 && m.out > 0, "adalora_triplet_scores", "in and out must be > 0");
  require(ipt_ema && unc_ema && scores, "adalora_triplet_scores", "null tensor");
  require(adalora_module_extent(m) <= flat_elems, "adalora_triplet_scores",
          "the module reaches past the flat buffers");
  const AdaLoraTripletScores k{
      {ipt_ema, flat_elems}, {unc_ema, flat_elems}, m, {scores, static_cast<std::size_t>(m.r)}};
  launch("adalora_triplet_scores", adalora_row_geometry(m.r), k);
}

inline constexpr int kOrthThreads = 256;      // a power of two (block_sum)
inline constexpr int kOrthTileFloats = 2048;  // one staged tile of P: kt rows x (d + 1) floats
inline constexpr int kOrthMaxRank = kAdaLoraOrthMaxRank;
static_assert(kOrthMaxRank < kOrthTileFloats, "a tile must hold at least one row");

// Row stride of the staged tile and rows of the long dimension per tile, for rank d.
PEFTRUN_HD int orth_tile_stride(int d) {
  return d + 1;
}
PEFTRUN_HD int orth_tile_rows(int d) {
  return kOrthTileFloats / orth_tile_stride(d);
}

// Shared memory, sized for the largest rank of the launch (every block carves the same layout
// and uses the part its own d needs).
struct OrthRegShared {
  Span<float> tile;      // [kt, d + 1]: tile[kk * (d + 1) + i] = P(k0 + kk, i)
  Span<double> gram;     // [max(threads, max_rank^2)]: per-slice Gram partials, then C [d, d]
  Span<double> scratch;  // [threads]: block_sum
  PEFTRUN_HD static OrthRegShared carve(SharedCarver& c, int max_rank) {
    const std::size_t d2 = static_cast<std::size_t>(max_rank) * static_cast<std::size_t>(max_rank);
    const std::size_t t = static_cast<std::size_t>(kOrthThreads);
    OrthRegShared s;
    s.tile = c.take<float>(static_cast<std::size_t>(kOrthTileFloats));
    s.gram = c.take<double>(d2 > t ? d2 : t);
    s.scratch = c.take<double>(t);
    return s;
  }
};

inline LaunchGeometry orth_reg_geometry(int count, int max_rank) {
  LaunchGeometry g;
  g.grid_x = count;
  g.threads = kOrthThreads;
  g.smem_bytes = shared_bytes<OrthRegShared>(max_rank);
  return g;
}

struct AdaLoraOrthReg {
  static constexpr int kMaxThreads = kOrthThreads;
  Span<const float> params;  // the flat buffer
  Span<float> grads;         // same layout; ptr == nullptr: norms only
  Span<const AdaLoraOrthMatrix> mats;
  Span<double> norms;  // [count]
  int max_rank;
  float weight;

  // Matrix element (k, i) as a flat-buffer index: A [d, L] row-major, B [L, d] row-major.
  struct View {
    std::size_t offset;
    int d, L;
    bool is_A;
    PEFTRUN_HD std::size_t at(int k, int i) const {
      return is_A ? offset + static_cast<std::size_t>(i) * L + k
                  : offset + static_cast<std::size_t>(k) * d + i;
    }
    // Tile slot u < n * d of rows [k0, k0 + n) as (kk, i), in the order of consecutive flat
    // indices for consecutive u (coalesced).
    PEFTRUN_HD void slot(int u, int n, int& kk, int& i) const {
      if (is_A) {
        i = u / n;
        kk = u % n;
      } else {
        kk = u / d;
        i = u % d;
      }
    }
  };

  template <class Ctx>
  PEFTRUN_HD void stage(const Ctx& ctx, const View& v, Span<float> tile, int k0, int n) const {
    const std::size_t ld = static_cast<std::size_t>(orth_tile_stride(v.d));
    for (int u = ctx.thread(); u < n * v.d; u += ctx.threads()) {
      int kk = 0, i = 0;
      v.slot(u, n, kk, i);
      tile[static_cast<std::size_t>(kk) * ld + i] = params[v.at(k0 + kk, i)];
    }
  }

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const OrthRegShared sh = OrthRegShared::carve(carver, max_rank);
    const std::size_t m = static_cast<std::size_t>(ctx.block_x());
    const AdaLoraOrthMatrix desc = mats[m];
    View v;
    v.offset = static_cast<std::size_t>(desc.offset);
    v.is_A = desc.is_A != 0;
    v.d = v.is_A ? desc.rows : desc.cols;
    v.L = v.is_A ? desc.cols : desc.rows;
    // A rank the shared memory was not sized for, or no long dimension: no result rather than a
    // wrong one (the whole block returns, so no barrier is left waiting). With L >= 1 the tile
    // loop's barriers separate every phase below.
    if (v.d < 1 || v.d > max_rank || v.L < 1) {
      if (ctx.thread() == 0) norms[m] = static_cast<double>(float_nan());
      return;
    }
    const int d = v.d, kt = orth_tile_rows(d), t = ctx.thread(), T = ctx.threads();
    const std::size_t ld = static_cast<std::size_t>(orth_tile_stride(d));
    const int E = d * d;
    const int slices = E >= T ? 1 : T / E;
    const int items = E * slices;

    // Gram: item w = (slice s, entry e) lives in gram[w] for the whole walk.
    for (int w = t; w < items; w += T) sh.gram[static_cast<std::size_t>(w)] = 0.0;
    for (int k0 = 0; k0 < v.L; k0 += kt) {
      const int n = imin(kt, v.L - k0);
      stage(ctx, v, sh.tile, k0, n);
      ctx.sync();
      for (int w = t; w < items; w += T) {
        const int e = w % E, s = w / E;
        const std::size_t i = static_cast<std::size_t>(e / d), j = static_cast<std::size_t>(e % d);
        double acc = 0.0;
        for (int kk = s; kk < n; kk += slices) {
          const std::size_t row = static_cast<std::size_t>(kk) * ld;
          acc += static_cast<double>(sh.tile[row + i]) * static_cast<double>(sh.tile[row + j]);
        }
        sh.gram[static_cast<std::size_t>(w)] += acc;
      }
      ctx.sync();  // the next tile overwrites this one
    }
    // C = G - I into gram[0, E): the owner of entry e adds the other slices (gram[s * E + e],
    // s >= 1, at indices >= E that no thread writes here) in slice order.
    double ss = 0.0;
    for (int e = t; e < E; e += T) {
      double g = 0.0;
      for (int s = 0; s < slices; ++s) g += sh.gram[static_cast<std::size_t>(s) * E + e];
      const double c = g - ((e / d) == (e % d) ? 1.0 : 0.0);
      sh.gram[static_cast<std::size_t>(e)] = c;
      ss += c * c;
    }
    const double norm = std::sqrt(block_sum(ctx, sh.scratch, ss));  // its barriers publish C
    if (t == 0) norms[m] = norm;
    // As cpu::orth_reg: no gradient at ||C|| = 0 (torch's norm backward) or for weight 0. Every
    // thread sees the same norm, so the block leaves together.
    if (grads.ptr == nullptr || !(norm > 0.0) || weight == 0.0f) return;
    const float alpha = static_cast<float>(2.0 * static_cast<double>(weight) / norm);

    for (int k0 = 0; k0 < v.L; k0 += kt) {
      const int n = imin(kt, v.L - k0);
      stage(ctx, v, sh.tile, k0, n);
      ctx.sync();
      for (int u = t; u < n * d; u += T) {
        int kk = 0, i = 0;
        v.slot(u, n, kk, i);
        const std::size_t prow = static_cast<std::size_t>(kk) * ld;
        double acc = 0.0;
        for (int j = 0; j < d; ++j) {  // C[j, i] = C[i, j]
          acc +=
              sh.gram[static_cast<std::size_t>(j) * d + i] * static_cast<double>(sh.tile[prow + j]);
        }
        float& g = grads[v.at(k0 + kk, i)];
        g += static_cast<float>(static_cast<double>(alpha) * acc);
      }
      ctx.sync();
    }
  }
};

// params_elems: the flat buffers' length (bounds for the emulator; the device does not check).
template <class Launcher>
void launch_adalora_orth_reg(const Launcher& launch, const float* params, float* grads,
                             std::size_t params_elems, const AdaLoraOrthMatrix* mats, int count,
                             int max_rank, float weight, double* norms) {
  const char* op = "adalora_orth_reg";
  require(count >= 0, op, "count must be >= 0, got " + std::to_string(count));
  require(max_rank >= 1 && max_rank <= kOrthMaxRank, op,
          "max_rank must be in [1, " + std::to_string(kOrthMaxRank) + "], got " +
              std::to_string(max_rank));
  if (count == 0) return;
  require(params && mats && norms, op, "null tensor");
  const std::size_t c = static_cast<std::size_t>(count);
  const AdaLoraOrthReg k{{params, params_elems},
                         {grads, grads ? params_elems : 0},
                         {mats, c},
                         {norms, c},
                         max_rank,
                         weight};
  launch(op, orth_reg_geometry(count, max_rank), k);
}

}  // namespace peftrun::blocks
