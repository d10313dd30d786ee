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
#include "kernels/softcap_math.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

struct AttentionShape {
  int B, T, H, KV, hd;
  int window;  // sliding window in keys (attention_visible); 0 = none
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

// The output columns a thread holds: d = cg, cg + kTpr, ... below hd.
template <class Tile>
struct Columns {
  float v[Tile::kColsPerThread];
  int cg, hd;

  PEFTRUN_HD Columns(int cg_, int hd_) : cg(cg_), hd(hd_) {
    for (float& x : v) x = 0.0f;
  }
  PEFTRUN_HD void scale(float a) {
    for (float& x : v) x *= a;
  }
  // v[d] += w * tile[row, d]
  PEFTRUN_HD void add_row(float w, Span<float> tile, int row, int ld) {
    const std::size_t o = static_cast<std::size_t>(row) * ld;
    for (int x = 0; x < Tile::kColsPerThread; ++x) {
      const int d = cg + Tile::kTpr * x;
      if (d < hd) v[x] += w * tile[o + d];
    }
  }
  // dst[offset + d] = a * v[d], rounded to St.
  template <class St>
  PEFTRUN_HD void store(Span<typename St::Elem> dst, std::int64_t offset, float a) const {
    for (int x = 0; x < Tile::kColsPerThread; ++x) {
      const int d = cg + Tile::kTpr * x;
      if (d < hd) dst[static_cast<std::size_t>(offset + d)] = St::from_float(a * v[x]);
    }
  }
};

// Where a thread of a query-tile block (forward, dQ) stands: tile row r of query t of head h of
// sequence b, reading kv head kvh.
struct QueryRow {
  int r, cg, b, h, kvh, t0, t;
  bool ok;           // t < T (the last tile has idle rows)
  bool packed;       // segment ids given
  std::int64_t seq;  // offset of sequence b in [B * T]
  std::size_t stat;  // index of (b, h, t) in [B, H, T]
  std::int32_t seg;  // segment id of t (0 when not packed or !ok)
};

template <class Tile, class Ctx>
PEFTRUN_HD QueryRow query_row(const Ctx& ctx, const AttentionShape& s,
                              Span<const std::int32_t> segment) {
  QueryRow q;
  q.r = ctx.thread() / Tile::kTpr;
  q.cg = ctx.thread() % Tile::kTpr;
  q.b = ctx.block_z();
  q.h = ctx.block_y();
  q.kvh = q.h / (s.H / s.KV);
  q.t0 = ctx.block_x() * Tile::kRows;
  q.t = q.t0 + q.r;
  q.ok = q.t < s.T;
  q.packed = segment.size > 0;
  q.seq = static_cast<std::int64_t>(q.b) * s.T;
  q.stat = static_cast<std::size_t>((static_cast<std::int64_t>(q.b) * s.H + q.h) * s.T + q.t);
  q.seg = q.packed && q.ok ? segment[static_cast<std::size_t>(q.seq + q.t)] : 0;
  return q;
}

// Key tiles a query tile starting at t0 sees: up to the one holding its last row ...
PEFTRUN_HD int key_tiles_until_diagonal(int t0, int rows, int other, int T) {
  return (imin(T, t0 + rows) - 1) / other + 1;
}

// ... and, with a sliding window, from the one holding its first row's first key. Tiles outside
// the range would add exact zeros (every score masked), so skipping them changes no bit.
PEFTRUN_HD int first_key_tile(int t0, int other, int window) {
  return attention_first_key(t0, window) / other;
}

// Query tiles that see keys [s0, s0 + rows): from the one holding s0 (causal) up to the one
// holding the last query whose window reaches the last key, s0 + rows - 1 + window - 1.
PEFTRUN_HD int query_tiles_until_window(int s0, int rows, int other, int T, int window) {
  const int all = ceil_div(T, other);
  return window > 0 ? imin(all, (s0 + rows + window - 2) / other + 1) : all;
}

// Forward. Block (query tile, head h, sequence b); thread (row r, column group cg).
//   for each key tile j up to the diagonal:
//     S = softcap(scale Q_i K_j^T) (masked: -inf);  m' = max(m, rowmax S);  P = e^(S - m')
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
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<float> q, kv, p, red;  // Q tile, K then V tile, P, row max / sum partials
    Span<std::int32_t> seg;     // key segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c, int hd) {
      const std::size_t ld = static_cast<std::size_t>(hd) + 1;
      Shared m;
      m.q = c.take<float>(Tile::kRows * ld);
      m.kv = c.take<float>(Tile::kOther * ld);
      m.p = c.take<float>(Tile::kRows * (Tile::kOther + 1));
      m.red = c.take<float>(Tile::kRows * Tile::kTpr);
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver, hd);
    const QueryRow qr = query_row<Tile>(ctx, s, segment);
    const int r = qr.r, cg = qr.cg;

    load_head_rows<St>(ctx, q, sh.q, R, qr.b, qr.t0, qr.h, s.H, s);
    float m = -float_inf(), l = 0.0f;
    Columns<Tile> acc(cg, hd);

    const int n_key_tiles = key_tiles_until_diagonal(qr.t0, R, C, T);
    for (int j = first_key_tile(qr.t0, C, s.window); j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's P and V are no longer read
      load_head_rows<St>(ctx, k, sh.kv, C, qr.b, s0, qr.kvh, s.KV, s);
      if (qr.packed) load_row_values(ctx, segment, sh.seg, C, qr.seq, s0, T);
      ctx.sync();

      float sc[Tile::kScoresPerThread];
      float tile_max = -float_inf();
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const int c = cg + P * e;
        sc[e] = -float_inf();
        if (qr.ok && attention_visible(qr.t, s0 + c, s.window, qr.packed, qr.seg,
                                       qr.packed ? sh.seg[static_cast<std::size_t>(c)] : 0)) {
          sc[e] = softcapped(tile_dot(sh.q, r, sh.kv, c, hd, ld) * scale, softcap);
        }
        tile_max = fmax2(tile_max, sc[e]);
      }
      sh.red[static_cast<std::size_t>(r * P + cg)] = tile_max;
      ctx.sync();
      float m_tile = -float_inf();
      for (int g = 0; g < P; ++g) {
        m_tile = fmax2(m_tile, sh.red[static_cast<std::size_t>(r * P + g)]);
      }
      const float m_new = fmax2(m, m_tile);
      // Until a row has seen a visible key m stays -inf and everything stays 0.
      const float alpha = m == -float_inf() ? 0.0f : std::exp(m - m_new);
      float p_sum = 0.0f;
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const float p = sc[e] == -float_inf() ? 0.0f : std::exp(sc[e] - m_new);
        sh.p[static_cast<std::size_t>(r * (C + 1) + cg + P * e)] = p;
        p_sum += p;
      }
      ctx.sync();  // maxima read, K no longer needed
      sh.red[static_cast<std::size_t>(r * P + cg)] = p_sum;
      load_head_rows<St>(ctx, v, sh.kv, C, qr.b, s0, qr.kvh, s.KV, s);
      ctx.sync();
      float l_tile = 0.0f;
      for (int g = 0; g < P; ++g) l_tile += sh.red[static_cast<std::size_t>(r * P + g)];
      l = alpha * l + l_tile;
      m = m_new;
      acc.scale(alpha);
      for (int c = 0; c < C; ++c) {
        acc.add_row(sh.p[static_cast<std::size_t>(r * (C + 1) + c)], sh.kv, c, ld);
      }
    }

    if (!qr.ok) return;  // after the last barrier
    // l >= 1: the diagonal key is always visible and carries e^0 at the running max.
    acc.template store<St>(out, ((qr.seq + qr.t) * s.H + qr.h) * hd, 1.0f / l);
    if (cg == 0) lse[qr.stat] = m + std::log(l);
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
//     Z = softcap(scale Q_i K_j^T);  P = e^(Z - lse);  dS = P (dO_i V_j^T - D) softcap'(Z);
//     dQ += dS K_j
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
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<float> q, dout, k, v, ds;  // tiles of Q, dO (owned rows), K, V (streamed), dS
    Span<std::int32_t> seg;         // key segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c, int hd) {
      const std::size_t ld = static_cast<std::size_t>(hd) + 1;
      Shared m;
      m.q = c.take<float>(Tile::kRows * ld);
      m.dout = c.take<float>(Tile::kRows * ld);
      m.k = c.take<float>(Tile::kOther * ld);
      m.v = c.take<float>(Tile::kOther * ld);
      m.ds = c.take<float>(Tile::kRows * (Tile::kOther + 1));
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver, hd);
    const QueryRow qr = query_row<Tile>(ctx, s, segment);
    const int r = qr.r, cg = qr.cg;
    const float lse_t = qr.ok ? lse[qr.stat] : 0.0f;
    const float d_t = qr.ok ? dvec[qr.stat] : 0.0f;

    load_head_rows<St>(ctx, q, sh.q, R, qr.b, qr.t0, qr.h, s.H, s);
    load_head_rows<St>(ctx, dout, sh.dout, R, qr.b, qr.t0, qr.h, s.H, s);
    Columns<Tile> acc(cg, hd);

    const int n_key_tiles = key_tiles_until_diagonal(qr.t0, R, C, T);
    for (int j = first_key_tile(qr.t0, C, s.window); j < n_key_tiles; ++j) {
      const int s0 = j * C;
      ctx.sync();  // the previous tile's dS and K are no longer read
      load_head_rows<St>(ctx, k, sh.k, C, qr.b, s0, qr.kvh, s.KV, s);
      load_head_rows<St>(ctx, v, sh.v, C, qr.b, s0, qr.kvh, s.KV, s);
      if (qr.packed) load_row_values(ctx, segment, sh.seg, C, qr.seq, s0, T);
      ctx.sync();
      for (int e = 0; e < Tile::kScoresPerThread; ++e) {
        const int c = cg + P * e;
        float ds = 0.0f;
        if (qr.ok && attention_visible(qr.t, s0 + c, s.window, qr.packed, qr.seg,
                                       qr.packed ? sh.seg[static_cast<std::size_t>(c)] : 0)) {
          const float z = softcapped(tile_dot(sh.q, r, sh.k, c, hd, ld) * scale, softcap);
          const float p = std::exp(z - lse_t);
          ds = softmax_grad(p, tile_dot(sh.dout, r, sh.v, c, hd, ld), d_t) *
               softcapped_grad(z, softcap);
        }
        sh.ds[static_cast<std::size_t>(r * (C + 1) + c)] = ds;
      }
      ctx.sync();
      for (int c = 0; c < C; ++c) {
        acc.add_row(sh.ds[static_cast<std::size_t>(r * (C + 1) + c)], sh.k, c, ld);
      }
    }

    if (!qr.ok) return;
    acc.template store<St>(dq, ((qr.seq + qr.t) * s.H + qr.h) * hd, scale);
  }
};

// dK, dV. Block (key tile, kv head, sequence b); thread (key row c, column group cg). For every
// query head of the group and every query tile from the diagonal on:
//   P^T = e^(softcap(scale K_j Q_i^T) - lse);  dV += P^T dO_i;
//   dS^T = P^T (V_j dO_i^T - D) softcap';  dK += dS^T Q_i
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
  float softcap;  // softcap_math.h; 0 = none

  struct Shared {
    Span<float> k, v, q, dout, pt, dst;  // K, V (owned rows), Q, dO (streamed), P^T, dS^T
    Span<float> lse, d;                  // per streamed query row
    Span<std::int32_t> seg;              // query segment ids
    PEFTRUN_HD static Shared carve(SharedCarver& c, int hd) {
      const std::size_t ld = static_cast<std::size_t>(hd) + 1;
      Shared m;
      m.k = c.take<float>(Tile::kRows * ld);
      m.v = c.take<float>(Tile::kRows * ld);
      m.q = c.take<float>(Tile::kOther * ld);
      m.dout = c.take<float>(Tile::kOther * ld);
      m.pt = c.take<float>(Tile::kRows * (Tile::kOther + 1));
      m.dst = c.take<float>(Tile::kRows * (Tile::kOther + 1));
      m.lse = c.take<float>(Tile::kOther);
      m.d = c.take<float>(Tile::kOther);
      m.seg = c.take<std::int32_t>(Tile::kOther);
      return m;
    }
  };

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    constexpr int R = Tile::kRows, C = Tile::kOther, P = Tile::kTpr;
    const int hd = s.hd, ld = hd + 1, T = s.T;
    SharedCarver carver(smem);
    const Shared sh = Shared::carve(carver, hd);
    const int c = ctx.thread() / P, cg = ctx.thread() % P;
    const int b = ctx.block_z(), kvh = ctx.block_y(), s0 = ctx.block_x() * R;
    const int group = s.H / s.KV;
    const int key = s0 + c;
    const bool key_ok = key < T;
    const bool packed = segment.size > 0;
    const std::int64_t seq = static_cast<std::int64_t>(b) * T;
    const std::int32_t seg_c = packed && key_ok ? segment[static_cast<std::size_t>(seq + key)] : 0;

    load_head_rows<St>(ctx, k, sh.k, R, b, s0, kvh, s.KV, s);
    load_head_rows<St>(ctx, v, sh.v, R, b, s0, kvh, s.KV, s);
    Columns<Tile> acc_k(cg, hd), acc_v(cg, hd);

    // Queries before s0 see none of these keys.
    const int first_q_tile = s0 / C, n_q_tiles = query_tiles_until_window(s0, R, C, T, s.window);
    for (int g = 0; g < group; ++g) {
      const int h = kvh * group + g;
      const std::int64_t stats = (static_cast<std::int64_t>(b) * s.H + h) * T;
      for (int i = first_q_tile; i < n_q_tiles; ++i) {
        const int t0 = i * C;
        ctx.sync();  // the previous tile's P^T, dS^T, Q and dO are no longer read
        load_head_rows<St>(ctx, q, sh.q, C, b, t0, h, s.H, s);
        load_head_rows<St>(ctx, dout, sh.dout, C, b, t0, h, s.H, s);
        load_row_values(ctx, lse, sh.lse, C, stats, t0, T);
        load_row_values(ctx, dvec, sh.d, C, stats, t0, T);
        if (packed) load_row_values(ctx, segment, sh.seg, C, seq, t0, T);
        ctx.sync();
        for (int e = 0; e < Tile::kScoresPerThread; ++e) {
          const int rq = cg + P * e, t = t0 + rq;
          const std::size_t iq = static_cast<std::size_t>(rq);
          float p = 0.0f, ds = 0.0f;
          if (key_ok && t < T &&
              attention_visible(t, key, s.window, packed, packed ? sh.seg[iq] : 0, seg_c)) {
            const float z = softcapped(tile_dot(sh.q, rq, sh.k, c, hd, ld) * scale, softcap);
            p = std::exp(z - sh.lse[iq]);
            ds = softmax_grad(p, tile_dot(sh.dout, rq, sh.v, c, hd, ld), sh.d[iq]) *
                 softcapped_grad(z, softcap);
          }
          sh.pt[static_cast<std::size_t>(c * (C + 1) + rq)] = p;
          sh.dst[static_cast<std::size_t>(c * (C + 1) + rq)] = ds;
        }
        ctx.sync();
        for (int rq = 0; rq < C; ++rq) {
          acc_v.add_row(sh.pt[static_cast<std::size_t>(c * (C + 1) + rq)], sh.dout, rq, ld);
          acc_k.add_row(sh.dst[static_cast<std::size_t>(c * (C + 1) + rq)], sh.q, rq, ld);
        }
      }
    }

    if (!key_ok) return;
    const std::int64_t orow = ((seq + key) * s.KV + kvh) * hd;
    acc_k.template store<St>(dk, orow, scale);
    acc_v.template store<St>(dv, orow, 1.0f);
  }
};

}  // namespace peftrun::blocks
