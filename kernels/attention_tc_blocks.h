// Flash attention on tensor cores (kernels/tensor_core.h) for 16-bit activations. Forward: the
// same contract and algorithm as FlashForward in attention_blocks.h (online softmax, only the
// output and the per-row logsumexp saved, the [T, T] matrix never stored), with the two
// products of every key tile, S = Q K^T and O += P V, done as warp-level 16 x 16 x 16 matrix
// products with fp32 accumulation instead of fp32 dot products on the CUDA cores.
//
// Tiling. A block owns kRows = 64 query rows, one 16-row slice per warp (4 warps, 128 threads),
// and streams key tiles of kOther = 64 rows. Q, K, V and P are staged in shared memory in the
// storage type (fp16 or bf16), S and the output accumulator O in fp32. Per key tile:
//   1. each warp: S[its 16 rows, 64 keys] = Q K^T                  (tensor cores)
//   2. two threads per query row: scale, cap (softcap_math.h) and mask S, running max m, P = e^(S -
//   m) rounded to
//      the storage type (as FlashAttention-2 does; l sums the unrounded fp32 values), l, and
//      O's row rescaled by e^(m_old - m)                            (CUDA cores)
//   3. each warp: O[its 16 rows, hd] += P V                        (tensor cores)
// O lives in shared memory rather than in accumulator fragments because step 2 rescales it by
// row, and a fragment's element-to-thread mapping is unspecified.
// Backward: FlashBackwardDqTc and FlashBackwardDkDvTc below, the CUDA-core backward's two
// kernels in this tiling (dS and P^T rounded to the storage type before their products).
// head_dim must be a multiple of 16 up to 128 (attention_tc_supported); other head dims and fp32
// activations use attention_blocks.h's kernels.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/attention_blocks.h"
#include "kernels/softcap_math.h"
#include "kernels/tensor_core.h"

namespace peftrun::blocks {

inline bool attention_tc_supported(int hd) {
  return hd >= 16 && hd <= 128 && hd % 16 == 0;
}

template <int kMaxHd_>
struct TcTile {
  static constexpr int kMaxHd = kMaxHd_;                // 64 or 128
  static constexpr int kRows = 64;                      // query rows of a block
  static constexpr int kOther = 64;                     // keys of a streamed tile
  static constexpr int kWarps = kRows / tc::kTile;      // one 16-row slice each
  static constexpr int kThreads = kWarps * tc::kWarp;   // 128
  static constexpr int kTpr = kThreads / kRows;         // softmax threads per row
  static constexpr int kColsPerThread = kOther / kTpr;  // softmax columns per thread
  // Row strides (elements). Each keeps a row a multiple of 16 bytes and a 16-row slice a
  // multiple of 32 bytes (WMMA's rules); the padding shifts consecutive rows across banks.
  static constexpr int kLdE = kMaxHd + 8;  // Q, K, V [rows][kLdE], 16-bit
  static constexpr int kLdS = kOther + 4;  // S [kRows][kLdS], fp32
  static constexpr int kLdP = kOther + 8;  // P [kRows][kLdP], 16-bit
  static constexpr int kLdO = kMaxHd + 4;  // O [kRows][kLdO], fp32
  static_assert(kThreads % kRows == 0 && kOther % kTpr == 0, "tile does not divide");
};

// Calls f(TcTile{}) for a head dimension attention_tc_supported accepts.
template <class F>
void with_tc_tile(int hd, F&& f) {
  if (hd <= 64) {
    f(TcTile<64>{});
  } else {
    f(TcTile<128>{});
  }
}

template <typename T>
PEFTRUN_HD Span<const T> const_span(Span<T> s) {
  return Span<const T>{s.ptr, s.size};
}

// out[wrow + i, j] = sum_d a[wrow + i, d] b[j, d] for the warp's 16 rows i and the tile's kOther
// rows j, i.e. a slice of A B^T (S = Q K^T, dP = dO V^T and their transposes), as tensor-core
// products over hd; a and b are [rows][kLdE] in the storage type, out fp32 [kRows][kLdS] at
// offset `at`.
template <class Tile, class St, class Ctx>
PEFTRUN_HD void slice_times_tile_t(const Ctx& ctx, Span<typename St::Elem> a,
                                   Span<typename St::Elem> b, std::size_t wrow, int hd,
                                   Span<float> out, std::size_t at) {
  constexpr int W = tc::kTile, kLdE = Tile::kLdE, kLdS = Tile::kLdS;
  for (int n = 0; n < Tile::kOther / W; ++n) {
    tc::FragAcc acc;
    tc::fill(acc, 0.0f);
    for (int kk = 0; kk < hd / W; ++kk) {
      tc::FragA<St> fa;
      tc::FragBCols<St> fb;
      tc::load_a<St>(fa, const_span(a), wrow * kLdE + W * kk, kLdE);
      tc::load_b_cols<St>(fb, const_span(b), static_cast<std::size_t>(W) * n * kLdE + W * kk, kLdE);
      tc::mma(acc, fa, fb, acc);
    }
    tc::store_acc(ctx, out, at + wrow * kLdS + W * n, kLdS, acc);
  }
}

// Rows [t0, t0 + rows) of head `head` of sequence b of a [B, T, heads, hd] tensor copied as
// they are stored into dst[rows][ld]; rows at or past T become zeros. Columns hd..ld are not
// written (no product reads them).
template <class St, class Ctx>
PEFTRUN_HD void copy_head_rows(const Ctx& ctx, Span<const typename St::Elem> src,
                               Span<typename St::Elem> dst, int rows, int ld, int b, int t0,
                               int head, int heads, const AttentionShape& s) {
  const int hd = s.hd;
  for (int i = ctx.thread(); i < rows * hd; i += ctx.threads()) {
    const int r = i / hd, d = i % hd, t = t0 + r;
    typename St::Elem v = St::from_float(0.0f);
    if (t < s.T) {
      const std::int64_t row = (static_cast<std::int64_t>(b) * s.T + t) * heads + head;
      v = src[static_cast<std::size_t>(row * hd + d)];
    }
    dst[static_cast<std::size_t>(r) * ld + d] = v;
  }
}

template <class Tile, class St>
struct FlashForwardTc {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  Span<const E> q, k, v;             // [B, T, H, hd], [B, T, KV, hd] x2
  Span<const std::int32_t> segment;  // [B * T]; size 0 = not packed
  Span<E> out;                       // [B, T, H, hd]
  Span<float> lse;                   // [B, H, T]
  AttentionShape s;
  float scale;
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<E> q, k, v, p;
    Span<float> s, o, red;   // scores, output accumulator, row max / sum partials
    Span<std::int32_t> seg;  // key segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c) {
      Shared m;  // the 32-byte multiples first, so every tile starts 32-byte aligned
      m.q = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdE);
      m.k = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.v = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.s = c.take<float>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdS);
      m.p = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdP);
      m.o = c.take<float>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdO);
      m.red = c.take<float>(Tile::kThreads);
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr, W = tc::kTile;
    constexpr int kLdE = Tile::kLdE, kLdS = Tile::kLdS, kLdP = Tile::kLdP, kLdO = Tile::kLdO;
    const int hd = s.hd, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver);
    // Product role: warp w owns rows [16 w, 16 w + 16). Softmax role: row r, column part cp.
    const int warp = ctx.thread() / tc::kWarp;
    const std::size_t wrow = static_cast<std::size_t>(W) * warp;
    const int r = ctx.thread() / P, cp = ctx.thread() % P;
    const int b = ctx.block_z(), h = ctx.block_y(), kvh = h / (s.H / s.KV);
    const int t0 = ctx.block_x() * R, t = t0 + r;
    const bool ok = t<T, packed = segment.size> 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::int32_t seg_t = packed && ok ? segment[static_cast<std::size_t>(seq + t)] : 0;
    const std::size_t srow = static_cast<std::size_t>(r) * kLdS;
    const std::size_t orow = static_cast<std::size_t>(r) * kLdO;

    copy_head_rows<St>(ctx, q, sh.q, R, kLdE, b, t0, h, s.H, s);
    for (int d = cp; d < hd; d += P) sh.o[orow + d] = 0.0f;
    float m = -float_inf(), l = 0.0f;

    const int n_key_tiles = key_tiles_until_diagonal(t0, R, C, T);
    for (int j = first_key_tile(t0, C, s.window); j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's P and V are no longer read
      copy_head_rows<St>(ctx, k, sh.k, C, kLdE, b, s0, kvh, s.KV, s);
      copy_head_rows<St>(ctx, v, sh.v, C, kLdE, b, s0, kvh, s.KV, s);
      if (packed) load_row_values(ctx, segment, sh.seg, C, seq, s0, T);
      ctx.sync();

      // 1. S = Q K^T: this warp's 16 rows against the 64 keys.
      slice_times_tile_t<Tile, St>(ctx, sh.q, sh.k, wrow, hd, sh.s, 0);
      ctx.sync();

      // 2. Online softmax over this thread's part of row r.
      float tile_max = -float_inf();
      for (int e = 0; e < Tile::kColsPerThread; ++e) {
        const int c = cp * Tile::kColsPerThread + e;
        float sc = -float_inf();
        if (ok && attention_visible(t, s0 + c, s.window, packed, seg_t,
                                    packed ? sh.seg[static_cast<std::size_t>(c)] : 0)) {
          sc = softcapped(sh.s[srow + c] * scale, softcap);
        }
        sh.s[srow + c] = sc;  // only this thread reads it again
        tile_max = fmax2(tile_max, sc);
      }
      sh.red[static_cast<std::size_t>(r * P + cp)] = tile_max;
      ctx.sync();
      float m_tile = -float_inf();
      for (int g = 0; g < P; ++g)
        m_tile = fmax2(m_tile, sh.red[static_cast<std::size_t>(r * P + g)]);
      const float m_new = fmax2(m, m_tile);
      // Until a row has seen a visible key m stays -inf and everything stays 0.
      const float alpha = m == -float_inf() ? 0.0f : std::exp(m - m_new);
      float p_sum = 0.0f;
      for (int e = 0; e < Tile::kColsPerThread; ++e) {
        const int c = cp * Tile::kColsPerThread + e;
        const float sc = sh.s[srow + c];
        const float p = sc == -float_inf() ? 0.0f : std::exp(sc - m_new);
        sh.p[static_cast<std::size_t>(r) * kLdP + c] = St::from_float(p);
        p_sum += p;
      }
      ctx.sync();  // the maxima are read: red can take the sums
      sh.red[static_cast<std::size_t>(r * P + cp)] = p_sum;
      ctx.sync();
      float l_tile = 0.0f;
      for (int g = 0; g < P; ++g) l_tile += sh.red[static_cast<std::size_t>(r * P + g)];
      l = alpha * l + l_tile;
      m = m_new;
      for (int d = cp; d < hd; d += P) sh.o[orow + d] *= alpha;
      ctx.sync();

      // 3. O += P V: this warp's 16 rows, 16 output columns at a time, over the 64 keys.
      for (int n = 0; n < hd / W; ++n) {
        tc::FragAcc acc;
        tc::load_acc(acc, const_span(sh.o), wrow * kLdO + W * n, kLdO);
        for (int kk = 0; kk < C / W; ++kk) {
          tc::FragA<St> a;
          tc::FragBRows<St> bv;
          tc::load_a<St>(a, const_span(sh.p), wrow * kLdP + W * kk, kLdP);
          tc::load_b_rows<St>(bv, const_span(sh.v), static_cast<std::size_t>(W) * kk * kLdE + W * n,
                              kLdE);
          tc::mma(acc, a, bv, acc);
        }
        tc::store_acc(ctx, sh.o, wrow * kLdO + W * n, kLdO, acc);
      }
    }
    ctx.sync();  // O's rows were last written by their warp's products

    if (!ok) return;
    // l >= 1: the diagonal key is always visible and carries e^0 at the running max.
    const float inv_l = 1.0f / l;
    const std::int64_t o = ((seq + t) * s.H + h) * hd;
    for (int d = cp; d < hd; d += P) {
      out[static_cast<std::size_t>(o + d)] = St::from_float(inv_l * sh.o[orow + d]);
    }
    if (cp == 0) {
      lse[static_cast<std::size_t>((static_cast<std::int64_t>(b) * s.H + h) * T + t)] =
          m + std::log(l);
    }
  }
};

// dQ on tensor cores. Block (64 query rows, head h, sequence b), the forward's tiling; per key
// tile: S = Q K^T and dP = dO V^T (tensor cores, fp32 into shared memory); two threads per row
// form dS = P (dP - D) softcap'(Z) with Z = softcapped(scale S) and P = e^(Z - lse), rounded to
// the storage type; then dQ += dS K (tensor cores) in accumulator fragments that live across the
// key tiles. dq = scale dQ.
template <class Tile, class St>
struct FlashBackwardDqTc {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  static constexpr int kColTiles = Tile::kMaxHd / tc::kTile;
  Span<const E> q, k, v, dout;
  Span<const std::int32_t> segment;
  Span<const float> lse, dvec;  // [B, H, T]
  Span<E> dq;
  AttentionShape s;
  float scale;
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<E> q, dout, k, v, ds;
    // S at 0 and dP at kRows * kLdS; at the end the dQ rows [kRows][kLdO] for the write-out.
    Span<float> sdp;
    Span<std::int32_t> seg;  // key segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c) {
      static_assert(Tile::kLdO <= 2 * Tile::kLdS, "dQ staging must fit where S and dP were");
      Shared m;
      m.q = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdE);
      m.dout = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdE);
      m.k = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.v = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.sdp = c.take<float>(2 * static_cast<std::size_t>(Tile::kRows) * Tile::kLdS);
      m.ds = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdP);
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr, W = tc::kTile;
    constexpr int kLdE = Tile::kLdE, kLdS = Tile::kLdS, kLdP = Tile::kLdP, kLdO = Tile::kLdO;
    const int hd = s.hd, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver);
    const std::size_t dp_at = static_cast<std::size_t>(R) * kLdS;
    const int warp = ctx.thread() / tc::kWarp;
    const std::size_t wrow = static_cast<std::size_t>(W) * warp;
    const int r = ctx.thread() / P, cp = ctx.thread() % P;
    const int b = ctx.block_z(), h = ctx.block_y(), kvh = h / (s.H / s.KV);
    const int t0 = ctx.block_x() * R, t = t0 + r;
    const bool ok = t<T, packed = segment.size> 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::int32_t seg_t = packed && ok ? segment[static_cast<std::size_t>(seq + t)] : 0;
    const std::size_t stat =
        static_cast<std::size_t>((static_cast<std::int64_t>(b) * s.H + h) * T + t);
    const float lse_t = ok ? lse[stat] : 0.0f;
    const float d_t = ok ? dvec[stat] : 0.0f;

    copy_head_rows<St>(ctx, q, sh.q, R, kLdE, b, t0, h, s.H, s);
    copy_head_rows<St>(ctx, dout, sh.dout, R, kLdE, b, t0, h, s.H, s);
    tc::FragAcc acc[kColTiles];
    for (tc::FragAcc& a : acc) tc::fill(a, 0.0f);

    const int n_key_tiles = key_tiles_until_diagonal(t0, R, C, T);
    for (int j = first_key_tile(t0, C, s.window); j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's dS and K are no longer read
      copy_head_rows<St>(ctx, k, sh.k, C, kLdE, b, s0, kvh, s.KV, s);
      copy_head_rows<St>(ctx, v, sh.v, C, kLdE, b, s0, kvh, s.KV, s);
      if (packed) load_row_values(ctx, segment, sh.seg, C, seq, s0, T);
      ctx.sync();

      // S = Q K^T and dP = dO V^T for this warp's 16 rows.
      slice_times_tile_t<Tile, St>(ctx, sh.q, sh.k, wrow, hd, sh.sdp, 0);
      slice_times_tile_t<Tile, St>(ctx, sh.dout, sh.v, wrow, hd, sh.sdp, dp_at);
      ctx.sync();

      for (int e = 0; e < Tile::kColsPerThread; ++e) {
        const int c = cp * Tile::kColsPerThread + e;
        const std::size_t at = static_cast<std::size_t>(r) * kLdS + c;
        float ds = 0.0f;
        if (ok && attention_visible(t, s0 + c, s.window, packed, seg_t,
                                    packed ? sh.seg[static_cast<std::size_t>(c)] : 0)) {
          const float z = softcapped(sh.sdp[at] * scale, softcap);
          const float p = std::exp(z - lse_t);
          ds = softmax_grad(p, sh.sdp[dp_at + at], d_t) * softcapped_grad(z, softcap);
        }
        sh.ds[static_cast<std::size_t>(r) * kLdP + c] = St::from_float(ds);
      }
      ctx.sync();

      for (int n = 0; n < kColTiles && n < hd / W; ++n) {  // dQ += dS K
        for (int kk = 0; kk < C / W; ++kk) {
          tc::FragA<St> a;
          tc::FragBRows<St> bk;
          tc::load_a<St>(a, const_span(sh.ds), wrow * kLdP + W * kk, kLdP);
          tc::load_b_rows<St>(bk, const_span(sh.k), static_cast<std::size_t>(W) * kk * kLdE + W * n,
                              kLdE);
          tc::mma(acc[n], a, bk, acc[n]);
        }
      }
    }

    ctx.sync();  // S and dP are no longer read: their space takes the dQ rows
    for (int n = 0; n < kColTiles && n < hd / W; ++n)
      tc::store_acc(ctx, sh.sdp, wrow * kLdO + W * n, kLdO, acc[n]);
    ctx.sync();
    if (!ok) return;
    const std::int64_t o = ((seq + t) * s.H + h) * hd;
    for (int d = cp; d < hd; d += P) {
      dq[static_cast<std::size_t>(o + d)] =
          St::from_float(scale * sh.sdp[static_cast<std::size_t>(r) * kLdO + d]);
    }
  }
};

// dK, dV on tensor cores. Block (64 key rows, kv head, sequence b), one 16-key slice per warp.
// For every query head of the group and every query tile from the diagonal on:
//   S^T = K Q^T, dP^T = V dO^T (tensor cores); Z^T = softcapped(scale S^T), P^T = e^(Z^T - lse),
//   dS^T = P^T (dP^T - D) softcap'(Z^T)
//   (two threads per key row, rounded to the storage type); dV += P^T dO, dK += dS^T Q (tensor
//   cores, accumulator fragments kept over the whole loop, so the group's heads are summed there).
// dk = scale dK, dv = dV.
template <class Tile, class St>
struct FlashBackwardDkDvTc {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  static constexpr int kColTiles = Tile::kMaxHd / tc::kTile;
  Span<const E> q, k, v, dout;
  Span<const std::int32_t> segment;
  Span<const float> lse, dvec;
  Span<E> dk, dv;
  AttentionShape s;
  float scale;
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<E> k, v, q, dout, pt, dst;  // K, V (owned rows), Q, dO (streamed), P^T, dS^T
    // S^T at 0 and dP^T at kRows * kLdS; at the end dK, then dV, rows [kRows][kLdO].
    Span<float> sdp;
    Span<float> lse, d;      // per streamed query row
    Span<std::int32_t> seg;  // query segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c) {
      static_assert(Tile::kLdO <= 2 * Tile::kLdS, "dK / dV staging must fit where S and dP were");
      Shared m;
      m.k = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdE);
      m.v = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdE);
      m.q = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.dout = c.take<E>(static_cast<std::size_t>(Tile::kOther) * Tile::kLdE);
      m.sdp = c.take<float>(2 * static_cast<std::size_t>(Tile::kRows) * Tile::kLdS);
      m.pt = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdP);
      m.dst = c.take<E>(static_cast<std::size_t>(Tile::kRows) * Tile::kLdP);
      m.lse = c.take<float>(Tile::kOther);
      m.d = c.take<float>(Tile::kOther);
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr, W = tc::kTile;
    constexpr int kLdE = Tile::kLdE, kLdS = Tile::kLdS, kLdP = Tile::kLdP, kLdO = Tile::kLdO;
    const int hd = s.hd, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver);
    const std::size_t dp_at = static_cast<std::size_t>(R) * kLdS;
    const int warp = ctx.thread() / tc::kWarp;
    const std::size_t wrow = static_cast<std::size_t>(W) * warp;
    const int c = ctx.thread() / P, cp = ctx.thread() % P;  // key row c, query columns part cp
    const int b = ctx.block_z(), kvh = ctx.block_y(), s0 = ctx.block_x() * R;
    const int group = s.H / s.KV;
    const int key = s0 + c;
    const bool key_ok = key<T, packed = segment.size> 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::int32_t seg_c = packed && key_ok ? segment[static_cast<std::size_t>(seq + key)] : 0;

    copy_head_rows<St>(ctx, k, sh.k, R, kLdE, b, s0, kvh, s.KV, s);
    copy_head_rows<St>(ctx, v, sh.v, R, kLdE, b, s0, kvh, s.KV, s);
    tc::FragAcc acc_k[kColTiles], acc_v[kColTiles];
    for (int n = 0; n < kColTiles; ++n) {
      tc::fill(acc_k[n], 0.0f);
      tc::fill(acc_v[n], 0.0f);
    }

    // Queries before s0 see none of these keys.
    const int first_q_tile = s0 / C, n_q_tiles = query_tiles_until_window(s0, R, C, T, s.window);
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      const std::int64_t stats = (static_cast<std::int64_t>(b) * s.H + h) * T;
      for (int i = first_q_tile; i < n_q_tiles; ++i) {
        const int t0 = i * C;
        ctx.sync();  // the previous tile's P^T, dS^T, Q and dO are no longer read
        copy_head_rows<St>(ctx, q, sh.q, C, kLdE, b, t0, h, s.H, s);
        copy_head_rows<St>(ctx, dout, sh.dout, C, kLdE, b, t0, h, s.H, s);
        load_row_values(ctx, lse, sh.lse, C, stats, t0, T);
        load_row_values(ctx, dvec, sh.d, C, stats, t0, T);
        if (packed) load_row_values(ctx, segment, sh.seg, C, seq, t0, T);
        ctx.sync();

        // S^T = K Q^T and dP^T = V dO^T for this warp's 16 keys.
        slice_times_tile_t<Tile, St>(ctx, sh.k, sh.q, wrow, hd, sh.sdp, 0);
        slice_times_tile_t<Tile, St>(ctx, sh.v, sh.dout, wrow, hd, sh.sdp, dp_at);
        ctx.sync();

        for (int e = 0; e < Tile::kColsPerThread; ++e) {
          const int rq = cp * Tile::kColsPerThread + e, t = t0 + rq;
          const std::size_t iq = static_cast<std::size_t>(rq);
          const std::size_t at = static_cast<std::size_t>(c) * kLdS + rq;
          float p = 0.0f, ds = 0.0f;
          if (key_ok && t < T &&
              attention_visible(t, key, s.window, packed, packed ? sh.seg[iq] : 0, seg_c)) {
            const float z = softcapped(sh.sdp[at] * scale, softcap);
            p = std::exp(z - sh.lse[iq]);
            ds = softmax_grad(p, sh.sdp[dp_at + at], sh.d[iq]) * softcapped_grad(z, softcap);
          }
          sh.pt[static_cast<std::size_t>(c) * kLdP + rq] = St::from_float(p);
          sh.dst[static_cast<std::size_t>(c) * kLdP + rq] = St::from_float(ds);
        }
        ctx.sync();

        for (int n = 0; n < kColTiles && n < hd / W; ++n) {  // dV += P^T dO, dK += dS^T Q
          for (int kk = 0; kk < C / W; ++kk) {
            const std::size_t query_at = static_cast<std::size_t>(W) * kk * kLdE + W * n;
            tc::FragA<St> a;
            tc::FragBRows<St> bq;
            tc::load_a<St>(a, const_span(sh.pt), wrow * kLdP + W * kk, kLdP);
            tc::load_b_rows<St>(bq, const_span(sh.dout), query_at, kLdE);
            tc::mma(acc_v[n], a, bq, acc_v[n]);
            tc::load_a<St>(a, const_span(sh.dst), wrow * kLdP + W * kk, kLdP);
            tc::load_b_rows<St>(bq, const_span(sh.q), query_at, kLdE);
            tc::mma(acc_k[n], a, bq, acc_k[n]);
          }
        }
      }
    }

    // Write-out through shared memory, dK then dV, in the space S and dP used.
    const std::int64_t orow = ((seq + key) * s.KV + kvh) * hd;
    const std::size_t srow = static_cast<std::size_t>(c) * kLdO;
    for (int pass = 0; pass < 2; ++pass) {
      ctx.sync();  // S^T / dP^T, or the dK rows, are no longer read
      for (int n = 0; n < kColTiles && n < hd / W; ++n) {
        tc::store_acc(ctx, sh.sdp, wrow * kLdO + W * n, kLdO, pass == 0 ? acc_k[n] : acc_v[n]);
      }
      ctx.sync();
      if (key_ok) {
        Span<E> dst = pass == 0 ? dk : dv;
        const float a = pass == 0 ? scale : 1.0f;
        for (int d = cp; d < hd; d += P) {
          dst[static_cast<std::size_t>(orow + d)] = St::from_float(a * sh.sdp[srow + d]);
        }
      }
    }
  }
};

}  // namespace peftrun::blocks
