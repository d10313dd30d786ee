// Flash-style causal GQA attention as block functors (see kernels/block_context.h) and their
// launch code, shared by attention_cuda.cu and the CPU emulator tests. Never stores the [T, T]
// score matrix: forward keeps a running (max, sum) per query row and saves only the output and
// the per-row logsumexp; backward recomputes the probabilities tile by tile from it
// (FlashAttention-2's algorithm; docs/ARCHITECTURE.md describes it).
//
// Tiling. A block owns a tile of kRows = 32 rows (queries in forward and dQ, keys in dK/dV) and
// streams tiles of kOther = 32 rows of the other side through shared memory, in fp32 with a row
// stride of head_dim + 1 (so the 32 rows of a tile fall into different banks). kTpr threads
// share a row: each computes kOther / kTpr of the row's scores against the streamed tile and
// accumulates head_dim / kTpr output columns (c = cg, cg + kTpr, ...) in registers. Row maxima
// and sums are combined over the kTpr threads through shared memory, in a fixed order.
// Everything accumulates in fp32; inputs and outputs are stored as St (fp32, fp16 or bf16).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/attention.h"
#include "kernels/attention_math.h"
#include "kernels/block_context.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

struct AttentionShape {
  int B, T, H, KV, hd;
};

template <int kMaxHd_, int kTpr_>
struct FlashTile {
  static constexpr int kMaxHd = kMaxHd_;  // head_dim <= kMaxHd (a multiple of 8)
  static constexpr int kTpr = kTpr_;      // threads per tile row
  static constexpr int kRows = 32;        // rows the block owns
  static constexpr int kOther = 32;       // rows of each streamed tile
  static constexpr int kThreads = kRows * kTpr;
  static constexpr int kColsPerThread = kMaxHd / kTpr;    // output columns in registers
  static constexpr int kScoresPerThread = kOther / kTpr;  // scores per streamed tile
  static_assert(kMaxHd % kTpr == 0 && kOther % kTpr == 0, "tile does not divide");
};

// Calls f(Tile{}) with the tile for head dimension hd (checked by attention_head_dim_supported).
template <class F>
void with_flash_tile(int hd, F&& f) {
  if (hd <= 64) {
    f(FlashTile<64, 4>{});
  } else if (hd <= 128) {
    f(FlashTile<128, 4>{});
  } else {
    f(FlashTile<256, 8>{});  // 8 threads per row keep dK + dV at 64 registers
  }
}

// Loads rows [t0, t0 + rows) of head `head` of sequence b of a [B, T, heads, hd] tensor into
// dst[rows][hd + 1] as fp32; rows at or past T become zeros (so masked products stay finite).
// Consecutive threads read consecutive elements of a row.
template <class St, class Ctx>
PEFTRUN_HD void load_head_rows(const Ctx& ctx, Span<const typename St::Elem> src, Span<float> dst,
                               int rows, int b, int t0, int head, int heads,
                               const AttentionShape& s) {
  const int hd = s.hd, ld = hd + 1;
  for (int i = ctx.thread(); i < rows * hd; i += ctx.threads()) {
    const int r = i / hd, d = i % hd, t = t0 + r;
    float v = 0.0f;
    if (t < s.T) {
      const std::int64_t row = (static_cast<std::int64_t>(b) * s.T + t) * heads + head;
      v = St::to_float(src[static_cast<std::size_t>(row * hd + d)]);
    }
    dst[static_cast<std::size_t>(r) * ld + d] = v;
  }
}

// Per-row values [B, H, T] (logsumexp, D) or segment ids [B, T] of rows [t0, t0 + rows) into
// shared memory; zeros past T.
template <typename T, class Ctx>
PEFTRUN_HD void load_row_values(const Ctx& ctx, Span<const T> src, Span<T> dst, int rows,
                                std::int64_t offset, int t0, int T_len) {
  for (int i = ctx.thread(); i < rows; i += ctx.threads()) {
    const int t = t0 + i;
    dst[static_cast<std::size_t>(i)] = t < T_len ? src[static_cast<std::size_t>(offset + t)] : T(0);
  }
}

// dot(a[ra, :hd], b[rb, :hd]) of two shared tiles with row stride ld.
PEFTRUN_HD float tile_dot(Span<float> a, int ra, Span<float> b, int rb, int hd, int ld) {
  const std::size_t oa = static_cast<std::size_t>(ra) * ld, ob = static_cast<std::size_t>(rb) * ld;
  float acc = 0.0f;
  for (int d = 0; d < hd; ++d) acc += a[oa + d] * b[ob + d];
  return acc;
}

// Forward. Block (query tile, head h, sequence b); thread (row r, column group cg).
//   for each key tile j up to the diagonal:
//     S = scale Q_i K_j^T (masked: -inf);  m' = max(m, rowmax S);  P = e^(S - m')
//     l = e^(m - m') l + rowsum P;  O = e^(m - m') O + P V_j;  m = m'
//   out = O / l;  lse = m + log l.
template <class Tile, class St>
struct FlashForward {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  Span<const E> q, k, v;             // [B, T, H, hd], [B, T, KV, hd] x2
  Span<const std::int32_t> segment;  // [B * T]; size 0 = not packed
  Span<E> out;                       // [B, T, H, hd]
  Span<float> lse;                   // [B, H, T]
  AttentionShape s;
  float scale;

  static std::size_t smem_bytes(int hd) {
    const std::size_t ld = static_cast<std::size_t>(hd) + 1;
    return SharedBudget()
        .add(Tile::kRows * ld, sizeof(float))                  // Q tile
        .add(Tile::kOther * ld, sizeof(float))                 // K, then V tile
        .add(Tile::kRows * (Tile::kOther + 1), sizeof(float))  // P
        .add(Tile::kRows * Tile::kTpr, sizeof(float))          // row max / sum partials
        .add(Tile::kOther, sizeof(std::int32_t))               // key segment ids
        .bytes();
  }

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carve(smem);
    const Span<float> sQ = carve.take<float>(static_cast<std::size_t>(R) * ld);
    const Span<float> sKV = carve.take<float>(static_cast<std::size_t>(C) * ld);
    const Span<float> sP = carve.take<float>(R * (C + 1));
    const Span<float> sRed = carve.take<float>(R * P);
    const Span<std::int32_t> sSeg = carve.take<std::int32_t>(C);

    const int r = ctx.thread() / P, cg = ctx.thread() % P;
    const int b = ctx.block_z(), h = ctx.block_y(), t0 = ctx.block_x() * R;
    const int kvh = h / (s.H / s.KV);
    const int t = t0 + r;
    const bool row_ok = t < T;
    const bool packed = segment.size > 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;  // offset of sequence b in [B*T]
    const std::int32_t seg_t = packed && row_ok ? segment[static_cast<std::size_t>(seq + t)] : 0;

    load_head_rows<St>(ctx, q, sQ, R, b, t0, h, s.H, s);
    float m = -float_inf(), l = 0.0f;
    float acc[Tile::kColsPerThread];
    for (float& a : acc) a = 0.0f;

    // Keys past the tile's last query are never visible.
    const int n_key_tiles = (imin(T, t0 + R) - 1) / C + 1;
    for (int j = 0; j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's P and V are no longer read
      load_head_rows<St>(ctx, k, sKV, C, b, s0, kvh, s.KV, s);
      if (packed) load_row_values(ctx, segment, sSeg, C, seq, s0, T);
      ctx.sync();

      float sc[Tile::kScoresPerThread];
      float tile_max = -float_inf();
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const int c = cg + P * e;
        sc[e] = -float_inf();
        if (row_ok && attention_visible(t, s0 + c, packed, seg_t,
                                        packed ? sSeg[static_cast<std::size_t>(c)] : 0)) {
          sc[e] = tile_dot(sQ, r, sKV, c, hd, ld) * scale;
        }
        tile_max = fmax2(tile_max, sc[e]);
      }
      sRed[static_cast<std::size_t>(r * P + cg)] = tile_max;
      ctx.sync();
      float m_tile = -float_inf();
      for (int g = 0; g < P; ++g) m_tile = fmax2(m_tile, sRed[static_cast<std::size_t>(r * P + g)]);
      const float m_new = fmax2(m, m_tile);
      // Until a row has seen a visible key m stays -inf and everything stays 0.
      const float alpha = m == -float_inf() ? 0.0f : std::exp(m - m_new);
      float p_sum = 0.0f;
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const float p = sc[e] == -float_inf() ? 0.0f : std::exp(sc[e] - m_new);
        sP[static_cast<std::size_t>(r * (C + 1) + cg + P * e)] = p;
        p_sum += p;
      }
      ctx.sync();  // maxima read, K no longer needed
      sRed[static_cast<std::size_t>(r * P + cg)] = p_sum;
      load_head_rows<St>(ctx, v, sKV, C, b, s0, kvh, s.KV, s);
      ctx.sync();
      float l_tile = 0.0f;
      for (int g = 0; g < P; ++g) l_tile += sRed[static_cast<std::size_t>(r * P + g)];
      l = alpha * l + l_tile;
      m = m_new;
      for (int x = 0; x < Tile::kColsPerThread; ++x) acc[x] *= alpha;
      for (int c = 0; c < C; ++c) {
        const float p = sP[static_cast<std::size_t>(r * (C + 1) + c)];
        const std::size_t vrow = static_cast<std::size_t>(c) * ld;
        for (int x = 0; x < Tile::kColsPerThread; ++x) {
          const int d = cg + P * x;
          if (d < hd) acc[x] += p * sKV[vrow + d];
        }
      }
    }

    if (!row_ok) return;  // after the last barrier
    // l >= 1: the diagonal key is always visible and carries e^0 at the running max.
    const float inv_l = 1.0f / l;
    const std::int64_t orow = ((seq + t) * s.H + h) * hd;
    for (int x = 0; x < Tile::kColsPerThread; ++x) {
      const int d = cg + P * x;
      if (d < hd) out[static_cast<std::size_t>(orow + d)] = St::from_float(acc[x] * inv_l);
    }
    if (cg == 0) {
      lse[static_cast<std::size_t>((static_cast<std::int64_t>(b) * s.H + h) * T + t)] =
          m + std::log(l);
    }
  }
};

// Backward preprocessing: D[b, h, t] = sum_d dO[b, t, h, d] O[b, t, h, d] (= rowsum(P * dP)).
// One thread per row, grid-stride.
template <class St>
struct FlashRowDot {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const E> dout, out;  // [B, T, H, hd]
  Span<float> dvec;         // [B, H, T]
  AttentionShape s;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char>) const {
    const std::int64_t rows = static_cast<std::int64_t>(s.B) * s.T * s.H;
    for (std::int64_t row = pointwise_first(ctx); row < rows; row += pointwise_stride(ctx)) {
      const std::int64_t h = row % s.H, bt = row / s.H, t = bt % s.T, b = bt / s.T;
      const std::size_t o = static_cast<std::size_t>(row * s.hd);
      float acc = 0.0f;
      for (int d = 0; d < s.hd; ++d) acc += St::to_float(dout[o + d]) * St::to_float(out[o + d]);
      dvec[static_cast<std::size_t>((b * s.H + h) * s.T + t)] = acc;
    }
  }
};

// dQ. Block (query tile, head h, sequence b); thread (query row r, column group cg).
//   for each key tile j up to the diagonal:
//     P = e^(scale Q_i K_j^T - lse);  dS = P (dO_i V_j^T - D);  dQ += dS K_j
//   dq = scale dQ.
template <class Tile, class St>
struct FlashBackwardDq {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  Span<const E> q, k, v, dout;
  Span<const std::int32_t> segment;
  Span<const float> lse, dvec;  // [B, H, T]
  Span<E> dq;
  AttentionShape s;
  float scale;

  static std::size_t smem_bytes(int hd) {
    const std::size_t ld = static_cast<std::size_t>(hd) + 1;
    return SharedBudget()
        .add(Tile::kRows * ld, sizeof(float))                  // Q
        .add(Tile::kRows * ld, sizeof(float))                  // dO
        .add(Tile::kOther * ld, sizeof(float))                 // K
        .add(Tile::kOther * ld, sizeof(float))                 // V
        .add(Tile::kRows * (Tile::kOther + 1), sizeof(float))  // dS
        .add(Tile::kOther, sizeof(std::int32_t))               // key segment ids
        .bytes();
  }

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carve(smem);
    const Span<float> sQ = carve.take<float>(static_cast<std::size_t>(R) * ld);
    const Span<float> sdO = carve.take<float>(static_cast<std::size_t>(R) * ld);
    const Span<float> sK = carve.take<float>(static_cast<std::size_t>(C) * ld);
    const Span<float> sV = carve.take<float>(static_cast<std::size_t>(C) * ld);
    const Span<float> sdS = carve.take<float>(R * (C + 1));
    const Span<std::int32_t> sSeg = carve.take<std::int32_t>(C);

    const int r = ctx.thread() / P, cg = ctx.thread() % P;
    const int b = ctx.block_z(), h = ctx.block_y(), t0 = ctx.block_x() * R;
    const int kvh = h / (s.H / s.KV);
    const int t = t0 + r;
    const bool row_ok = t < T;
    const bool packed = segment.size > 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::size_t row_stat =
        static_cast<std::size_t>((static_cast<std::int64_t>(b) * s.H + h) * T + t);
    const std::int32_t seg_t = packed && row_ok ? segment[static_cast<std::size_t>(seq + t)] : 0;
    const float lse_t = row_ok ? lse[row_stat] : 0.0f;
    const float d_t = row_ok ? dvec[row_stat] : 0.0f;

    load_head_rows<St>(ctx, q, sQ, R, b, t0, h, s.H, s);
    load_head_rows<St>(ctx, dout, sdO, R, b, t0, h, s.H, s);
    float acc[Tile::kColsPerThread];
    for (float& a : acc) a = 0.0f;

    const int n_key_tiles = (imin(T, t0 + R) - 1) / C + 1;
    for (int j = 0; j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's dS and K are no longer read
      load_head_rows<St>(ctx, k, sK, C, b, s0, kvh, s.KV, s);
      load_head_rows<St>(ctx, v, sV, C, b, s0, kvh, s.KV, s);
      if (packed) load_row_values(ctx, segment, sSeg, C, seq, s0, T);
      ctx.sync();
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const int c = cg + P * e;
        float ds = 0.0f;
        if (row_ok && attention_visible(t, s0 + c, packed, seg_t,
                                        packed ? sSeg[static_cast<std::size_t>(c)] : 0)) {
          const float p = std::exp(tile_dot(sQ, r, sK, c, hd, ld) * scale - lse_t);
          ds = softmax_grad(p, tile_dot(sdO, r, sV, c, hd, ld), d_t);
        }
        sdS[static_cast<std::size_t>(r * (C + 1) + c)] = ds;
      }
      ctx.sync();
      for (int c = 0; c < C; ++c) {
        const float ds = sdS[static_cast<std::size_t>(r * (C + 1) + c)];
        const std::size_t krow = static_cast<std::size_t>(c) * ld;
        for (int x = 0; x < Tile::kColsPerThread; ++x) {
          const int d = cg + P * x;
          if (d < hd) acc[x] += ds * sK[krow + d];
        }
      }
    }

    if (!row_ok) return;
    const std::int64_t orow = ((seq + t) * s.H + h) * hd;
    for (int x = 0; x < Tile::kColsPerThread; ++x) {
      const int d = cg + P * x;
      if (d < hd) dq[static_cast<std::size_t>(orow + d)] = St::from_float(scale * acc[x]);
    }
  }
};

// dK, dV. Block (key tile, kv head, sequence b); thread (key row c, column group cg). For every
// query head of the group and every query tile from the diagonal on:
//   P^T = e^(scale K_j Q_i^T - lse);  dV += P^T dO_i;  dS^T = P^T (V_j dO_i^T - D);  dK += dS^T Q_i
// dk = scale dK, dv = dV: the group's heads are summed in registers, so no atomics are needed.
template <class Tile, class St>
struct FlashBackwardDkDv {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = Tile::kThreads;
  Span<const E> q, k, v, dout;
  Span<const std::int32_t> segment;
  Span<const float> lse, dvec;
  Span<E> dk, dv;
  AttentionShape s;
  float scale;

  static std::size_t smem_bytes(int hd) {
    const std::size_t ld = static_cast<std::size_t>(hd) + 1;
    return SharedBudget()
        .add(Tile::kRows * ld, sizeof(float))                  // K
        .add(Tile::kRows * ld, sizeof(float))                  // V
        .add(Tile::kOther * ld, sizeof(float))                 // Q
        .add(Tile::kOther * ld, sizeof(float))                 // dO
        .add(Tile::kRows * (Tile::kOther + 1), sizeof(float))  // P^T
        .add(Tile::kRows * (Tile::kOther + 1), sizeof(float))  // dS^T
        .add(Tile::kOther, sizeof(float))                      // lse of the query rows
        .add(Tile::kOther, sizeof(float))                      // D of the query rows
        .add(Tile::kOther, sizeof(std::int32_t))               // query segment ids
        .bytes();
  }

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carve(smem);
    const Span<float> sK = carve.take<float>(static_cast<std::size_t>(R) * ld);
    const Span<float> sV = carve.take<float>(static_cast<std::size_t>(R) * ld);
    const Span<float> sQ = carve.take<float>(static_cast<std::size_t>(C) * ld);
    const Span<float> sdO = carve.take<float>(static_cast<std::size_t>(C) * ld);
    const Span<float> sPt = carve.take<float>(R * (C + 1));
    const Span<float> sdSt = carve.take<float>(R * (C + 1));
    const Span<float> sLse = carve.take<float>(C);
    const Span<float> sD = carve.take<float>(C);
    const Span<std::int32_t> sSeg = carve.take<std::int32_t>(C);

    const int c = ctx.thread() / P, cg = ctx.thread() % P;
    const int b = ctx.block_z(), kvh = ctx.block_y(), s0 = ctx.block_x() * R;
    const int group = s.H / s.KV;
    const int key = s0 + c;
    const bool key_ok = key < T;
    const bool packed = segment.size > 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::int32_t seg_c = packed && key_ok ? segment[static_cast<std::size_t>(seq + key)] : 0;

    load_head_rows<St>(ctx, k, sK, R, b, s0, kvh, s.KV, s);
    load_head_rows<St>(ctx, v, sV, R, b, s0, kvh, s.KV, s);
    float acc_k[Tile::kColsPerThread], acc_v[Tile::kColsPerThread];
    for (int x = 0; x < Tile::kColsPerThread; ++x) acc_k[x] = acc_v[x] = 0.0f;

    // Queries before s0 see none of these keys.
    const int first_q_tile = s0 / C, n_q_tiles = ceil_div(T, C);
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      const std::int64_t stats = (static_cast<std::int64_t>(b) * s.H + h) * T;
      for (int i = first_q_tile; i < n_q_tiles; ++i) {
        const int t0 = i * C;
        ctx.sync();  // the previous tile's P^T, dS^T, Q and dO are no longer read
        load_head_rows<St>(ctx, q, sQ, C, b, t0, h, s.H, s);
        load_head_rows<St>(ctx, dout, sdO, C, b, t0, h, s.H, s);
        load_row_values(ctx, lse, sLse, C, stats, t0, T);
        load_row_values(ctx, dvec, sD, C, stats, t0, T);
        if (packed) load_row_values(ctx, segment, sSeg, C, seq, t0, T);
        ctx.sync();
        for (int e = 0; e < Tile::kScoresPerThread; ++e) {
          const int rq = cg + P * e, t = t0 + rq;
          float p = 0.0f, ds = 0.0f;
          if (key_ok && t < T &&
              attention_visible(t, key, packed, packed ? sSeg[static_cast<std::size_t>(rq)] : 0,
                                seg_c)) {
            p = std::exp(tile_dot(sQ, rq, sK, c, hd, ld) * scale -
                         sLse[static_cast<std::size_t>(rq)]);
            ds =
                softmax_grad(p, tile_dot(sdO, rq, sV, c, hd, ld), sD[static_cast<std::size_t>(rq)]);
          }
          sPt[static_cast<std::size_t>(c * (C + 1) + rq)] = p;
          sdSt[static_cast<std::size_t>(c * (C + 1) + rq)] = ds;
        }
        ctx.sync();
        for (int rq = 0; rq < C; ++rq) {
          const float p = sPt[static_cast<std::size_t>(c * (C + 1) + rq)];
          const float ds = sdSt[static_cast<std::size_t>(c * (C + 1) + rq)];
          const std::size_t qrow = static_cast<std::size_t>(rq) * ld;
          for (int x = 0; x < Tile::kColsPerThread; ++x) {
            const int d = cg + P * x;
            if (d < hd) {
              acc_v[x] += p * sdO[qrow + d];
              acc_k[x] += ds * sQ[qrow + d];
            }
          }
        }
      }
    }

    if (!key_ok) return;
    const std::int64_t orow = ((seq + key) * s.KV + kvh) * hd;
    for (int x = 0; x < Tile::kColsPerThread; ++x) {
      const int d = cg + P * x;
      if (d < hd) {
        dk[static_cast<std::size_t>(orow + d)] = St::from_float(scale * acc_k[x]);
        dv[static_cast<std::size_t>(orow + d)] = St::from_float(acc_v[x]);
      }
    }
  }
};

inline void check_attention_shape(const char* op, int B, int T, int H, int KV, int hd) {
  require(B >= 1 && T >= 1 && H >= 1 && KV >= 1, op, "B, T, H and KV must be >= 1");
  require(
      H % KV == 0, op,
      "n_heads " + std::to_string(H) + " is not a multiple of n_kv_heads " + std::to_string(KV));
  require(B <= kMaxGridYZ && H <= kMaxGridYZ, op, "B and H must be <= 65535");
  require(cuda::attention_head_dim_supported(hd), op,
          "head_dim " + std::to_string(hd) + " is not supported (a multiple of 8 in [8, 256])");
}

template <class Launcher>
void launch_attention_forward(const Launcher& launch, const void* q, const void* k, const void* v,
                              const std::int32_t* segment, void* out, float* lse, int B, int T,
                              int H, int KV, int hd, DType dtype) {
  const char* op = "attention_forward";
  check_attention_shape(op, B, T, H, KV, hd);
  require(q && k && v && out && lse, op, "null tensor");
  const AttentionShape s{B, T, H, KV, hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));  // as the CPU computes it
  const std::size_t nq = static_cast<std::size_t>(B) * T * H * hd;
  const std::size_t nkv = static_cast<std::size_t>(B) * T * KV * hd;
  const std::size_t nrow = static_cast<std::size_t>(B) * H * T;
  const std::size_t nseg = segment ? static_cast<std::size_t>(B) * T : 0;
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    with_flash_tile(hd, [&](auto tile) {
      using Tile = decltype(tile);
      const FlashForward<Tile, St> kern{{static_cast<const E*>(q), nq},
                                        {static_cast<const E*>(k), nkv},
                                        {static_cast<const E*>(v), nkv},
                                        {segment, nseg},
                                        {static_cast<E*>(out), nq},
                                        {lse, nrow},
                                        s,
                                        scale};
      LaunchGeometry g;
      g.grid_x = ceil_div(T, Tile::kRows);
      g.grid_y = H;
      g.grid_z = B;
      g.threads = Tile::kThreads;
      g.smem_bytes = FlashForward<Tile, St>::smem_bytes(hd);
      launch(op, g, kern);
    });
  });
}

template <class Launcher>
void launch_attention_backward(const Launcher& launch, const void* dout, const void* q,
                               const void* k, const void* v, const void* out, const float* lse,
                               const std::int32_t* segment, void* dq, void* dk, void* dv,
                               void* workspace, std::size_t workspace_bytes, int B, int T, int H,
                               int KV, int hd, DType dtype) {
  const char* op = "attention_backward";
  check_attention_shape(op, B, T, H, KV, hd);
  require(dout && q && k && v && out && lse && dq && dk && dv, op, "null tensor");
  const std::size_t need = cuda::attention_backward_workspace_bytes(B, T, H);
  require(
      workspace && workspace_bytes >= need, op,
      "workspace of " + std::to_string(workspace_bytes) + " bytes; needs " + std::to_string(need));
  require(reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0, op,
          "workspace must be 16-byte aligned");
  const AttentionShape s{B, T, H, KV, hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const std::size_t nq = static_cast<std::size_t>(B) * T * H * hd;
  const std::size_t nkv = static_cast<std::size_t>(B) * T * KV * hd;
  const std::size_t nrow = static_cast<std::size_t>(B) * H * T;
  const std::size_t nseg = segment ? static_cast<std::size_t>(B) * T : 0;
  float* dvec = static_cast<float*>(workspace);  // D = rowsum(dO * O): [B, H, T]
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    const Span<const E> sq{static_cast<const E*>(q), nq}, sk{static_cast<const E*>(k), nkv},
        sv{static_cast<const E*>(v), nkv}, sdo{static_cast<const E*>(dout), nq};
    const FlashRowDot<St> pre{sdo, {static_cast<const E*>(out), nq}, {dvec, nrow}, s};
    launch("attention_backward_rowdot", pointwise_geometry(static_cast<std::int64_t>(B) * T * H),
           pre);
    with_flash_tile(hd, [&](auto tile) {
      using Tile = decltype(tile);
      const FlashBackwardDq<Tile, St> kdq{
          sq, sk,   sv, sdo, {segment, nseg}, {lse, nrow}, {dvec, nrow}, {static_cast<E*>(dq), nq},
          s,  scale};
      LaunchGeometry g;
      g.grid_x = ceil_div(T, Tile::kRows);
      g.grid_y = H;
      g.grid_z = B;
      g.threads = Tile::kThreads;
      g.smem_bytes = FlashBackwardDq<Tile, St>::smem_bytes(hd);
      launch("attention_backward_dq", g, kdq);

      const FlashBackwardDkDv<Tile, St> kdkv{sq,
                                             sk,
                                             sv,
                                             sdo,
                                             {segment, nseg},
                                             {lse, nrow},
                                             {dvec, nrow},
                                             {static_cast<E*>(dk), nkv},
                                             {static_cast<E*>(dv), nkv},
                                             s,
                                             scale};
      g.grid_y = KV;
      g.smem_bytes = FlashBackwardDkDv<Tile, St>::smem_bytes(hd);
      launch("attention_backward_dkdv", g, kdkv);
    });
  });
}

}  // namespace peftrun::blocks
