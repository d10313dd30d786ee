// Causal GQA attention on the CPU, materialising the [T, T] probabilities per (batch, head).
// The matrix products (Q K^T and P V forward; dO V^T, P^T dO, dS K and dS^T Q backward) go
// through BLAS; the per-head matrices are read in place from the [B, T, heads, hd] layout via the
// row stride (heads * hd) instead of being copied out. Each sequence runs in three phases, all
// on the kernel threads (parallel.h): the BLAS products before the row loops, the row loops
// (softmax, its gradient), then the BLAS products after them. The products are small (64-row
// blocks of one head), so each runs whole on one thread (SingleThreadedBlas) and the heads run
// side by side; backward's dK and dV sum over the query heads of a group, so there a thread
// takes whole groups and keeps their order.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "kernels/attention_math.h"
#include "kernels/exp_math.h"
#include "kernels/gemm.h"
#include "kernels/parallel.h"
#include "kernels/softcap_math.h"

namespace peftrun::cpu {
namespace {

using std::size_t;

// Offset of head `h` of token 0 of sequence `b` in a [B, T, heads, hd] tensor.
size_t head_offset(int b, int h, int T_len, int heads, int hd) {
  return (static_cast<size_t>(b) * T_len * heads + h) * hd;
}

// Causal structure: query rows [t0, t1) only see keys [0, t1), so the score / probability
// products are done per block of kRowBlock query rows over that key prefix. This skips the
// masked upper triangle (about half the GEMM work for long sequences) while each GEMM stays
// large enough for BLAS to run efficiently.
constexpr int kRowBlock = 64;

// fn(i) for every i < n on the kernel threads, in parts of one index or more: an index is a
// head's (or a kv group's) GEMMs, work enough to hand to a thread on its own.
template <typename F>
void for_each_head(int n, const F& fn) {
  parallel_for(static_cast<size_t>(n), 1, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) fn(static_cast<int>(i));
  });
}

// fn(h) for every query head, a task per kv group whose heads run in order: backward's dK and
// dV sum over a group's heads, so this keeps each sum's order whatever the thread count.
template <typename F>
void for_each_head_by_group(int KV, int group, const F& fn) {
  for_each_head(KV, [&](int g) {
    for (int h = g * group; h < (g + 1) * group; ++h) fn(h);
  });
}

// fn(h, t) for every head h < H and query row t < T_len, on the kernel threads (parallel.h).
// Row t costs ~t, so index i pairs rows i and T-1-i of a head: equal work per index, and the
// contiguous parts parallel_for hands out are balanced. Rows are independent, so results do
// not depend on the thread count.
template <typename F>
void for_causal_rows(int H, int T_len, const F& fn) {
  const size_t pairs = (static_cast<size_t>(T_len) + 1) / 2;         // per head
  const size_t min_part = min_part_for(static_cast<size_t>(T_len));  // a pair covers ~T_len
  parallel_for(static_cast<size_t>(H) * pairs, min_part, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const int h = static_cast<int>(i / pairs);
      const int t = static_cast<int>(i % pairs);
      fn(h, t);
      if (T_len - 1 - t != t) fn(h, T_len - 1 - t);
    }
  });
}

}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const std::int32_t* segment, int window,
                       T scale, T softcap, T* out, T* probs, int B, int T_len, int H, int KV,
                       int hd) {
  const int group = H / KV;  // query heads per kv head
  const int ldq = H * hd;    // row stride of a per-head Q / out matrix
  const int ldkv = KV * hd;  // row stride of a per-head K / V matrix
  const size_t TT = static_cast<size_t>(T_len) * T_len;
  const SingleThreadedBlas one_thread_per_gemm;
  for (int b = 0; b < B; ++b) {
    const std::int32_t* seg = segment ? segment + static_cast<size_t>(b) * T_len : nullptr;
    T* Pseq = probs + static_cast<size_t>(b) * H * TT;  // [H, T, T]
    // 1. Scores of every head: S = scale * Q[t0:t1] K[k0:t1]^T, block by block (k0: the
    // block's first visible key, 0 without a sliding window).
    for_each_head(H, [&](int h) {
      const T* qh = q + head_offset(b, h, T_len, H, hd);           // [T, hd] stride ldq
      const T* kh = k + head_offset(b, h / group, T_len, KV, hd);  // [T, hd] stride ldkv
      T* P = Pseq + static_cast<size_t>(h) * TT;                   // [T, T]
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int k0 = attention_first_key(t0, window);
        gemm(Trans::kNo, Trans::kYes, t1 - t0, t1 - k0, hd, scale,
             qh + static_cast<size_t>(t0) * ldq, ldq, kh + static_cast<size_t>(k0) * ldkv, ldkv,
             T(0), P + static_cast<size_t>(t0) * T_len + k0, T_len);
      }
    });
    // 2. Softmax of every row of every head (of the capped scores with a softcap), on the
    // kernel threads.
    for_causal_rows(H, T_len, [&](int h, int t) {
      T* row = Pseq + static_cast<size_t>(h) * TT + static_cast<size_t>(t) * T_len;  // [T]
      // Visible keys: first <= s <= t (first: the sliding window's start, else 0), and the
      // same document when packed. Another document's keys become -inf, whose e^(s - max) is
      // exactly 0; the keys before the window were not computed and become 0 below. s == t is
      // always visible, so the max is finite and the normaliser is >= 1.
      const int first = attention_first_key(t, window);
      if (softcap > T(0)) {
        for (int s = first; s <= t; ++s) row[s] = softcapped(row[s], softcap);
      }
      if (seg != nullptr) {
        for (int s = first; s <= t; ++s) {
          if (!attention_visible(t, s, window, true, seg[t], seg[s])) {
            row[s] = -std::numeric_limits<T>::infinity();
          }
        }
      }
      T mx = row[t];
      for (int s = first; s < t; ++s) mx = std::max(mx, row[s]);
      // The exponentials in a branch-free loop the compiler vectorises (e^(s - max) <= 1, no
      // overflow), then their sum in order.
      for (int s = first; s <= t; ++s) row[s] = exp_nonpositive(row[s] - mx);
      T sum = 0;
      for (int s = first; s <= t; ++s) sum += row[s];
      const T inv = T(1) / sum;
      for (int s = first; s <= t; ++s) row[s] *= inv;
      std::fill(row, row + first, T(0));  // masked entries are exact zeros
      std::fill(row + t + 1, row + T_len, T(0));
    });
    // 3. out[t0:t1] = P[t0:t1, k0:t1] V[k0:t1]  (masked zeros make the mask exact)
    for_each_head(H, [&](int h) {
      const T* vh = v + head_offset(b, h / group, T_len, KV, hd);  // [T, hd] stride ldkv
      T* oh = out + head_offset(b, h, T_len, H, hd);               // [T, hd] stride ldq
      const T* P = Pseq + static_cast<size_t>(h) * TT;
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int k0 = attention_first_key(t0, window);
        gemm(Trans::kNo, Trans::kNo, t1 - t0, hd, t1 - k0, T(1),
             P + static_cast<size_t>(t0) * T_len + k0, T_len, vh + static_cast<size_t>(k0) * ldkv,
             ldkv, T(0), oh + static_cast<size_t>(t0) * ldq, ldq);
      }
    });
  }
}

// With S = scale Q K^T, Z = softcapped(S) (= S without a cap), P = softmax(Z), O = P V:
//   dV = P^T dO ;  dP = dO V^T ;  dS = P * (dP - rowsum(P * dP)) * softcap'(Z) ;
//   dQ = scale dS K ;  dK = scale dS^T Q.
// softcap'(Z) needs Z, which probs do not keep: with a cap, S is recomputed block by block
// (the forward's GEMM, so the same bits) next to dP.
// Masked entries have P = 0, hence dS = 0, so the mask needs no re-application here. The same
// causal row blocks as forward are used: block [t0, t1) touches keys [0, t1) only. dV and dK
// accumulate over the blocks (and the query heads of a group) in the same order as a
// block-at-a-time loop would.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs,
                        int window, T scale, T softcap, T* dq, T* dk, T* dv, int B, int T_len,
                        int H, int KV, int hd) {
  const int group = H / KV;
  const int ldq = H * hd;
  const int ldkv = KV * hd;
  const size_t TT = static_cast<size_t>(T_len) * T_len;
  // dk / dv sum over the `group` query heads sharing a kv head and over the row blocks: zero
  // once, then every GEMM accumulates (beta = 1).
  const size_t kv_elems = static_cast<size_t>(B) * T_len * KV * hd;
  std::fill(dk, dk + kv_elems, T(0));
  std::fill(dv, dv + kv_elems, T(0));
  // dP, then dS, of one sequence [H, T, T] (the size of its probabilities); thread_local so
  // the step loop allocates only on the first call.
  // (A lambda naming a thread_local reaches the running thread's copy, so the loops below use
  // this thread's buffer through dSv.)
  thread_local std::vector<T> dS;
  dS.resize(static_cast<size_t>(H) * TT);
  T* const dSv = dS.data();
  // With a softcap, the recomputed scores of one sequence [H, T, T], likewise.
  const bool capped = softcap > T(0);
  thread_local std::vector<T> scores;
  if (capped) scores.resize(static_cast<size_t>(H) * TT);
  T* const Sv = capped ? scores.data() : nullptr;
  const SingleThreadedBlas one_thread_per_gemm;
  for (int b = 0; b < B; ++b) {
    const T* Pseq = probs + static_cast<size_t>(b) * H * TT;  // [H, T, T]
    // 1. dV[0:t1] += P_blk^T dO_blk and dP_blk = dO_blk V[0:t1]^T : [rows, t1], per head (and,
    // with a softcap, S_blk = scale Q_blk K[0:t1]^T).
    for_each_head_by_group(KV, group, [&](int h) {
      const size_t qo = head_offset(b, h, T_len, H, hd);
      const size_t kvo = head_offset(b, h / group, T_len, KV, hd);
      const T* P = Pseq + static_cast<size_t>(h) * TT;
      T* dSh = dSv + static_cast<size_t>(h) * TT;
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int rows = t1 - t0;
        const int k0 = attention_first_key(t0, window);            // keys [k0, t1)
        const size_t kvk = kvo + static_cast<size_t>(k0) * ldkv;   // row k0 of K / V / dK / dV
        const T* dob = dout + qo + static_cast<size_t>(t0) * ldq;  // [rows, hd] stride ldq
        gemm(Trans::kYes, Trans::kNo, t1 - k0, hd, rows, T(1),
             P + static_cast<size_t>(t0) * T_len + k0, T_len, dob, ldq, T(1), dv + kvk, ldkv);
        gemm(Trans::kNo, Trans::kYes, rows, t1 - k0, hd, T(1), dob, ldq, v + kvk, ldkv, T(0),
             dSh + static_cast<size_t>(t0) * T_len + k0, T_len);
        if (capped) {
          gemm(Trans::kNo, Trans::kYes, rows, t1 - k0, hd, scale,
               q + qo + static_cast<size_t>(t0) * ldq, ldq, k + kvk, ldkv, T(0),
               Sv + static_cast<size_t>(h) * TT + static_cast<size_t>(t0) * T_len + k0, T_len);
        }
      }
    });
    // 2. dS = P * (dP - rowsum(P * dP)) for every row of every head, on the kernel threads.
    for_causal_rows(H, T_len, [&](int h, int t) {
      const T* prow = Pseq + static_cast<size_t>(h) * TT + static_cast<size_t>(t) * T_len;
      T* drow = dSv + static_cast<size_t>(h) * TT + static_cast<size_t>(t) * T_len;
      // Causal: only s <= t can be non-zero; s in (t, end of its block) must be zeroed for the
      // GEMMs below.
      // With a sliding window, only first <= s; the GEMMs below read from the block's first
      // key, so [block's first key, first) is zeroed too (here all of [0, first)).
      const int first = attention_first_key(t, window);
      T dot = 0;
      for (int s = first; s <= t; ++s) dot += prow[s] * drow[s];
      for (int s = first; s <= t; ++s) drow[s] = softmax_grad(prow[s], drow[s], dot);
      if (capped) {
        const T* srow = Sv + static_cast<size_t>(h) * TT + static_cast<size_t>(t) * T_len;
        for (int s = first; s <= t; ++s) {
          drow[s] *= softcapped_grad(softcapped(srow[s], softcap), softcap);
        }
      }
      std::fill(drow, drow + first, T(0));
      const int block_end = std::min(T_len, (t / kRowBlock + 1) * kRowBlock);
      std::fill(drow + t + 1, drow + block_end, T(0));
    });
    // 3. dQ[t0:t1] = scale dS_blk K[0:t1] (overwrites this head's rows of dq) and
    //    dK[0:t1] += scale dS_blk^T Q_blk.
    for_each_head_by_group(KV, group, [&](int h) {
      const size_t qo = head_offset(b, h, T_len, H, hd);
      const size_t kvo = head_offset(b, h / group, T_len, KV, hd);
      const T* dSh = dSv + static_cast<size_t>(h) * TT;
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int rows = t1 - t0;
        const int k0 = attention_first_key(t0, window);
        const size_t kvk = kvo + static_cast<size_t>(k0) * ldkv;
        const T* dSb = dSh + static_cast<size_t>(t0) * T_len + k0;  // [rows, t1 - k0] stride T
        gemm(Trans::kNo, Trans::kNo, rows, hd, t1 - k0, scale, dSb, T_len, k + kvk, ldkv, T(0),
             dq + qo + static_cast<size_t>(t0) * ldq, ldq);
        gemm(Trans::kYes, Trans::kNo, t1 - k0, hd, rows, scale, dSb, T_len,
             q + qo + static_cast<size_t>(t0) * ldq, ldq, T(1), dk + kvk, ldkv);
      }
    });
  }
}

template void attention_forward<float>(const float*, const float*, const float*,
                                       const std::int32_t*, int, float, float, float*, float*, int,
                                       int, int, int, int);
template void attention_forward<double>(const double*, const double*, const double*,
                                        const std::int32_t*, int, double, double, double*, double*,
                                        int, int, int, int, int);
template void attention_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, int, float, float, float*, float*, float*,
                                        int, int, int, int, int);
template void attention_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, int, double, double, double*, double*,
                                         double*, int, int, int, int, int);

}  // namespace peftrun::cpu
