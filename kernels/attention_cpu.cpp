// Causal GQA attention on the CPU, materialising the [T, T] probabilities per (batch, head).
// The matrix products (Q K^T and P V forward; dO V^T, P^T dO, dS K and dS^T Q backward) go
// through BLAS; the per-head matrices are read in place from the [B, T, heads, hd] layout via the
// row stride (heads * hd) instead of being copied out.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <vector>

#include "kernels/attention_math.h"
#include "kernels/gemm.h"

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

}  // namespace

template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const std::int32_t* segment, T* out,
                       T* probs, int B, int T_len, int H, int KV, int hd) {
  const int group = H / KV;  // query heads per kv head
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
  const int ldq = H * hd;    // row stride of a per-head Q / out matrix
  const int ldkv = KV * hd;  // row stride of a per-head K / V matrix
  const size_t TT = static_cast<size_t>(T_len) * T_len;
  for (int b = 0; b < B; ++b) {
    const std::int32_t* seg = segment ? segment + static_cast<size_t>(b) * T_len : nullptr;
    for (int h = 0; h < H; ++h) {
      const int kvh = h / group;
      const T* qh = q + head_offset(b, h, T_len, H, hd);     // [T, hd] stride ldq
      const T* kh = k + head_offset(b, kvh, T_len, KV, hd);  // [T, hd] stride ldkv
      const T* vh = v + head_offset(b, kvh, T_len, KV, hd);  // [T, hd] stride ldkv
      T* oh = out + head_offset(b, h, T_len, H, hd);         // [T, hd] stride ldq
      T* P = probs + (static_cast<size_t>(b) * H + h) * TT;  // [T, T]
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int rows = t1 - t0;
        T* Pb = P + static_cast<size_t>(t0) * T_len;  // [rows, T], keys [0, t1) filled here
        // S = scale * Q[t0:t1] K[0:t1]^T
        gemm(Trans::kNo, Trans::kYes, rows, t1, hd, scale, qh + static_cast<size_t>(t0) * ldq, ldq,
             kh, ldkv, T(0), Pb, T_len);
        for (int t = t0; t < t1; ++t) {
          T* row = P + static_cast<size_t>(t) * T_len;  // [T]
          // Visible keys: s <= t, and same document when packed. s == t is always visible, so
          // every row has at least one entry and the normaliser is >= 1.
          const bool packed = seg != nullptr;
          const std::int32_t seg_t = packed ? seg[t] : 0;
          auto visible = [&](int s) {
            return attention_visible(t, s, packed, seg_t, packed ? seg[s] : 0);
          };
          T mx = -std::numeric_limits<T>::infinity();
          for (int s = 0; s <= t; ++s) {
            if (!visible(s)) continue;
            mx = std::max(mx, row[s]);
          }
          T sum = 0;
          for (int s = 0; s <= t; ++s) {
            if (!visible(s)) {
              row[s] = 0;
              continue;
            }
            const T e = std::exp(row[s] - mx);  // max-subtracted: e <= 1, no overflow
            row[s] = e;
            sum += e;
          }
          const T inv = T(1) / sum;
          for (int s = 0; s <= t; ++s) row[s] *= inv;
          std::fill(row + t + 1, row + T_len, T(0));  // masked entries are exact zeros
        }
        // out[t0:t1] = P[t0:t1, 0:t1] V[0:t1]  (masked zeros make the mask exact)
        gemm(Trans::kNo, Trans::kNo, rows, hd, t1, T(1), Pb, T_len, vh, ldkv, T(0),
             oh + static_cast<size_t>(t0) * ldq, ldq);
      }
    }
  }
}

// With S = scale Q K^T, P = softmax(S), O = P V:
//   dV = P^T dO ;  dP = dO V^T ;  dS = P * (dP - rowsum(P * dP)) ;
//   dQ = scale dS K ;  dK = scale dS^T Q.
// Masked entries have P = 0, hence dS = 0, so the mask needs no re-application here. The same
// causal row blocks as forward are used: block [t0, t1) touches keys [0, t1) only.
template <typename T>
void attention_backward(const T* dout, const T* q, const T* k, const T* v, const T* probs, T* dq,
                        T* dk, T* dv, int B, int T_len, int H, int KV, int hd) {
  const int group = H / KV;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
  const int ldq = H * hd;
  const int ldkv = KV * hd;
  const size_t TT = static_cast<size_t>(T_len) * T_len;
  // dk / dv sum over the `group` query heads sharing a kv head and over the row blocks: zero
  // once, then every GEMM accumulates (beta = 1).
  const size_t kv_elems = static_cast<size_t>(B) * T_len * KV * hd;
  std::fill(dk, dk + kv_elems, T(0));
  std::fill(dv, dv + kv_elems, T(0));
  // [rows, T] scratch; thread_local so the step loop allocates only on the first call.
  thread_local std::vector<T> dS;
  dS.resize(static_cast<size_t>(std::min(T_len, kRowBlock)) * T_len);
  for (int b = 0; b < B; ++b) {
    for (int h = 0; h < H; ++h) {
      const int kvh = h / group;
      const size_t qo = head_offset(b, h, T_len, H, hd);
      const size_t kvo = head_offset(b, kvh, T_len, KV, hd);
      const T* P = probs + (static_cast<size_t>(b) * H + h) * TT;  // [T, T]
      for (int t0 = 0; t0 < T_len; t0 += kRowBlock) {
        const int t1 = std::min(T_len, t0 + kRowBlock);
        const int rows = t1 - t0;
        const T* Pb = P + static_cast<size_t>(t0) * T_len;         // [rows, T]
        const T* dob = dout + qo + static_cast<size_t>(t0) * ldq;  // [rows, hd] stride ldq
        const T* qb = q + qo + static_cast<size_t>(t0) * ldq;      // [rows, hd] stride ldq
        // dV[0:t1] += P_blk^T dO_blk
        gemm(Trans::kYes, Trans::kNo, t1, hd, rows, T(1), Pb, T_len, dob, ldq, T(1), dv + kvo,
             ldkv);
        // dP_blk = dO_blk V[0:t1]^T : [rows, t1]
        gemm(Trans::kNo, Trans::kYes, rows, t1, hd, T(1), dob, ldq, v + kvo, ldkv, T(0), dS.data(),
             T_len);
        for (int t = t0; t < t1; ++t) {
          const T* prow = P + static_cast<size_t>(t) * T_len;
          T* drow = dS.data() + static_cast<size_t>(t - t0) * T_len;
          // Causal: only s <= t can be non-zero; s in (t, t1) must be zeroed for the GEMMs below.
          T dot = 0;
          for (int s = 0; s <= t; ++s) dot += prow[s] * drow[s];
          for (int s = 0; s <= t; ++s) drow[s] = softmax_grad(prow[s], drow[s], dot);
          std::fill(drow + t + 1, drow + t1, T(0));
        }
        // dQ[t0:t1] = scale dS_blk K[0:t1]   (overwrites this head's rows of dq)
        gemm(Trans::kNo, Trans::kNo, rows, hd, t1, scale, dS.data(), T_len, k + kvo, ldkv, T(0),
             dq + qo + static_cast<size_t>(t0) * ldq, ldq);
        // dK[0:t1] += scale dS_blk^T Q_blk
        gemm(Trans::kYes, Trans::kNo, t1, hd, rows, scale, dS.data(), T_len, qb, ldq, T(1),
             dk + kvo, ldkv);
      }
    }
  }
}

template void attention_forward<float>(const float*, const float*, const float*,
                                       const std::int32_t*, float*, float*, int, int, int, int,
                                       int);
template void attention_forward<double>(const double*, const double*, const double*,
                                        const std::int32_t*, double*, double*, int, int, int, int,
                                        int);
template void attention_backward<float>(const float*, const float*, const float*, const float*,
                                        const float*, float*, float*, float*, int, int, int, int,
                                        int);
template void attention_backward<double>(const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int, int, int,
                                         int, int);

}  // namespace peftrun::cpu
