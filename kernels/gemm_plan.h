// Host-side planning of a cuBLASLt matmul, plain C++ so it is unit-tested without a GPU
// (tests/gemm_plan_test.cpp): the row-major -> column-major mapping, argument validation, the
// key that identifies a problem for cuBLASLt's heuristic, and the cache keyed by it.
//
// Mapping. cuBLASLt is column-major: D (m x n, ld) = opX(X) (m x k) opY(Y) (k x n). A row-major
// [R, C] buffer with row stride ld is, read column-major, the C x R matrix of its transpose with
// the same ld. So the row-major product D[M, N] = op(A) op(B) is computed as its transpose
//   D^T (N x M) = op(B)^T op(A)^T
// i.e. X = B, Y = A, m = N, n = M, k = K, and no data moves:
//   X: trans_b == kNo ? B is [K, N] row-major = the N x K matrix B^T, used as is (OP_N)
//                     : B is [N, K] row-major = the K x N matrix B^T, transposed (OP_T)
//   Y: trans_a == kNo ? A is [M, K] row-major = the K x M matrix A^T (OP_N)
//                     : A is [K, M] row-major = the M x K matrix A^T, transposed (OP_T)
//   D: [M, N] row-major = the N x M column-major D^T with ld = ldd.
// cuBLASLt's per-row extras of D^T (the bias vector and the alpha vector, both of length m)
// are therefore per COLUMN of the row-major D, i.e. per output feature, which is what a linear
// layer's bias and DoRA's m / n need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

#include "kernels/dtype.h"
#include "kernels/gemm.h"

namespace peftrun::cuda {

enum class PointerMode : std::uint8_t {
  kHost,                 // alpha and beta host scalars
  kAlphaVectorBetaZero,  // alpha a device vector [m], beta = 0
  kAlphaVectorBetaHost,  // alpha a device vector [m], beta a host scalar
};

// One cuBLASLt operand in column-major terms.
struct LtMatrix {
  const void* data = nullptr;
  std::uint64_t rows = 0, cols = 0;  // as stored (before the op)
  std::int64_t ld = 0;
  bool transposed = false;  // OP_T
};

struct LtProblem {
  std::uint64_t m = 0, n = 0, k = 0;
  LtMatrix x, y;  // D = opX(X) opY(Y); X = row-major B, Y = row-major A
  std::uint64_t d_rows = 0, d_cols = 0;
  std::int64_t ldd = 0;
  PointerMode pointer_mode = PointerMode::kHost;
  bool bias = false;
};

// Throws std::invalid_argument naming the first inconsistency (negative sizes, a stride shorter
// than its row, unsupported type pairs, a missing pointer).
void validate_gemm(const GemmArgs& g);

// The column-major problem cuBLASLt solves for g (see the mapping above). Assumes M, N, K > 0.
LtProblem map_to_column_major(const GemmArgs& g);

// Largest power of two dividing the address, capped at 256 (cuBLASLt's default requirement);
// 256 for nullptr. Part of the key because the heuristic picks vectorised algorithms by it.
std::uint32_t pointer_alignment(const void* p);

// Everything cuBLASLt's heuristic looks at. Two problems with equal keys get the same plan.
struct GemmKey {
  std::uint64_t m = 0, n = 0, k = 0;
  std::int64_t ldx = 0, ldy = 0, ldd = 0;
  std::uint8_t trans_x = 0, trans_y = 0;
  std::uint8_t ab_type = 0, d_type = 0;
  std::uint8_t pointer_mode = 0, bias = 0;
  std::uint32_t align_x = 0, align_y = 0, align_c = 0, align_d = 0, align_bias = 0;
  std::uint64_t workspace_bytes = 0;

  bool operator==(const GemmKey& o) const;
  bool operator!=(const GemmKey& o) const { return !(*this == o); }
};

struct GemmKeyHash {
  std::size_t operator()(const GemmKey& k) const;
};

GemmKey make_gemm_key(const GemmArgs& g, std::size_t workspace_bytes);

// "m=..., n=..., k=..., fp16 x fp16 -> fp32, ..." for error and fallback messages.
std::string describe(const GemmKey& k);

// Plans by key. get_or_create runs make() only for a key it has not seen, so the heuristic is
// queried once per distinct problem; a throwing make() inserts nothing.
template <typename V>
class PlanCache {
 public:
  template <typename Make>
  V& get_or_create(const GemmKey& key, Make&& make) {
    auto it = map_.find(key);
    if (it != map_.end()) return it->second;
    ++created_;
    return map_.emplace(key, make()).first->second;
  }
  const V* find(const GemmKey& key) const {
    auto it = map_.find(key);
    return it == map_.end() ? nullptr : &it->second;
  }
  std::size_t size() const { return map_.size(); }
  std::size_t created() const { return created_; }

 private:
  std::unordered_map<GemmKey, V, GemmKeyHash> map_;
  std::size_t created_ = 0;
};

}  // namespace peftrun::cuda
