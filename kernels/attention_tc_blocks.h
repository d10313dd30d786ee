// Flash attention forward on tensor cores (kernels/tensor_core.h) for 16-bit activations: the
// same contract and algorithm as FlashForward in attention_blocks.h (online softmax, only the
// output and the per-row logsumexp saved, the [T, T] matrix never stored), with the two
// products of every key tile, S = Q K^T and O += P V, done as warp-level 16 x 16 x 16 matrix
// products with fp32 accumulation instead of fp32 dot products on the CUDA cores.
//
// Tiling. A block owns kRows = 64 query rows, one 16-row slice per warp (4 warps, 128 threads),
// and streams key tiles of kOther = 64 rows. Q, K, V and P are staged in shared memory in the
// storage type (fp16 or bf16), S and the output accumulator O in fp32. Per key tile:
//   1. each warp: S[its 16 rows, 64 keys] = Q K^T                  (tensor cores)
//   2. two threads per query row: mask and scale S, running max m, P = e^(S - m) rounded to
//      the storage type (as FlashAttention-2 does; l sums the unrounded fp32 values), l, and
//      O's row rescaled by e^(m_old - m)                            (CUDA cores)
//   3. each warp: O[its 16 rows, hd] += P V                        (tensor cores)
// O lives in shared memory rather than in accumulator fragments because step 2 rescales it by
// row, and a fragment's element-to-thread mapping is unspecified.
// head_dim must be a multiple of 16 up to 128 (attention_tc_supported); other head dims and fp32
// activations use FlashForward.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/attention_blocks.h"
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
    for (int j = 0; j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's P and V are no longer read
      copy_head_rows<St>(ctx, k, sh.k, C, kLdE, b, s0, kvh, s.KV, s);
      copy_head_rows<St>(ctx, v, sh.v, C, kLdE, b, s0, kvh, s.KV, s);
      if (packed) load_row_values(ctx, segment, sh.seg, C, seq, s0, T);
      ctx.sync();

      // 1. S = Q K^T: this warp's 16 rows against the 64 keys, 16 keys at a time.
      for (int n = 0; n < C / W; ++n) {
        tc::FragAcc acc;
        tc::fill(acc, 0.0f);
        for (int kk = 0; kk < hd / W; ++kk) {
          tc::FragA<St> a;
          tc::FragBCols<St> bk;
          tc::load_a<St>(a, const_span(sh.q), wrow * kLdE + W * kk, kLdE);
          tc::load_b_cols<St>(bk, const_span(sh.k), static_cast<std::size_t>(W) * n * kLdE + W * kk,
                              kLdE);
          tc::mma(acc, a, bk, acc);
        }
        tc::store_acc(ctx, sh.s, wrow * kLdS + W * n, kLdS, acc);
      }
      ctx.sync();

      // 2. Online softmax over this thread's part of row r.
      float tile_max = -float_inf();
      for (int e = 0; e < Tile::kColsPerThread; ++e) {
        const int c = cp * Tile::kColsPerThread + e;
        float sc = -float_inf();
        if (ok && attention_visible(t, s0 + c, packed, seg_t,
                                    packed ? sh.seg[static_cast<std::size_t>(c)] : 0)) {
          sc = sh.s[srow + c] * scale;
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

}  // namespace peftrun::blocks
