// Host-side GEMM planning (see gemm_plan.h): validation, the column-major mapping, plan keys.
#include "kernels/gemm_plan.h"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>

#include "kernels/counter_rng.h"

namespace peftrun::cuda {
namespace {

[[noreturn]] void bad(const GemmArgs& g, const std::string& what) {
  throw std::invalid_argument("cuda::gemm (M=" + std::to_string(g.M) + ", N=" +
                              std::to_string(g.N) + ", K=" + std::to_string(g.K) + "): " + what);
}

void check_stride(const GemmArgs& g, const char* name, int ld, int row_len) {
  const int need = row_len > 1 ? row_len : 1;
  if (ld < need) {
    bad(g, std::string(name) + " = " + std::to_string(ld) + " is shorter than a stored row (" +
               std::to_string(need) + " elements)");
  }
}

PointerMode pointer_mode_of(const GemmArgs& g) {
  if (!g.alpha_vec) return PointerMode::kHost;
  return g.beta == 0.0f ? PointerMode::kAlphaVectorBetaZero : PointerMode::kAlphaVectorBetaHost;
}

auto key_tuple(const GemmKey& k) {
  return std::tie(k.m, k.n, k.k, k.ldx, k.ldy, k.ldd, k.trans_x, k.trans_y, k.ab_type, k.d_type,
                  k.pointer_mode, k.bias, k.align_x, k.align_y, k.align_c, k.align_d, k.align_bias,
                  k.workspace_bytes);
}

}  // namespace

void validate_gemm(const GemmArgs& g) {
  if (g.M < 0 || g.N < 0 || g.K < 0) bad(g, "negative dimension");
  if (g.d_type != g.ab_type && g.d_type != DType::kF32) {
    bad(g, std::string("output type ") + dtype_name(g.d_type) + " with " + dtype_name(g.ab_type) +
               " inputs: D must be the input type or fp32");
  }
  if (g.M == 0 || g.N == 0) return;
  if (!g.D) bad(g, "D is null");
  check_stride(g, "ldd", g.ldd, g.N);
  if (g.K == 0) return;
  if (!g.A || !g.B) bad(g, "A or B is null");
  check_stride(g, "lda", g.lda, g.trans_a == Trans::kNo ? g.K : g.M);
  check_stride(g, "ldb", g.ldb, g.trans_b == Trans::kNo ? g.N : g.K);
}

LtProblem map_to_column_major(const GemmArgs& g) {
  LtProblem p;
  const auto M = static_cast<std::uint64_t>(g.M), N = static_cast<std::uint64_t>(g.N),
             K = static_cast<std::uint64_t>(g.K);
  p.m = N;
  p.n = M;
  p.k = K;
  // X = row-major B read column-major (B^T as stored).
  p.x.data = g.B;
  p.x.ld = g.ldb;
  p.x.transposed = g.trans_b == Trans::kYes;
  p.x.rows = p.x.transposed ? K : N;
  p.x.cols = p.x.transposed ? N : K;
  // Y = row-major A read column-major (A^T as stored).
  p.y.data = g.A;
  p.y.ld = g.lda;
  p.y.transposed = g.trans_a == Trans::kYes;
  p.y.rows = p.y.transposed ? M : K;
  p.y.cols = p.y.transposed ? K : M;
  p.d_rows = N;
  p.d_cols = M;
  p.ldd = g.ldd;
  p.pointer_mode = pointer_mode_of(g);
  p.bias = g.bias != nullptr;
  return p;
}

std::uint32_t pointer_alignment(const void* p) {
  if (!p) return 256;
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  std::uint32_t a = 1;
  while (a < 256 && (addr & a) == 0) a <<= 1;
  return a;
}

bool GemmKey::operator==(const GemmKey& o) const {
  return key_tuple(*this) == key_tuple(o);
}

std::size_t GemmKeyHash::operator()(const GemmKey& k) const {
  // Chained splitmix64 over every field: cheap, and any single-field change moves the hash.
  std::uint64_t h = 0x5eed0f9e33ull;
  auto mix = [&h](std::uint64_t v) { h = splitmix64(h ^ v); };
  mix(k.m);
  mix(k.n);
  mix(k.k);
  mix(static_cast<std::uint64_t>(k.ldx));
  mix(static_cast<std::uint64_t>(k.ldy));
  mix(static_cast<std::uint64_t>(k.ldd));
  mix(std::uint64_t(k.trans_x) | std::uint64_t(k.trans_y) << 8 | std::uint64_t(k.ab_type) << 16 |
      std::uint64_t(k.d_type) << 24 | std::uint64_t(k.pointer_mode) << 32 |
      std::uint64_t(k.bias) << 40);
  mix(std::uint64_t(k.align_x) | std::uint64_t(k.align_y) << 16 | std::uint64_t(k.align_c) << 32 |
      std::uint64_t(k.align_d) << 48);
  mix(k.align_bias);
  mix(k.workspace_bytes);
  return static_cast<std::size_t>(h);
}

GemmKey make_gemm_key(const GemmArgs& g, std::size_t workspace_bytes) {
  const LtProblem p = map_to_column_major(g);
  GemmKey k;
  k.m = p.m;
  k.n = p.n;
  k.k = p.k;
  k.ldx = p.x.ld;
  k.ldy = p.y.ld;
  k.ldd = p.ldd;
  k.trans_x = p.x.transposed ? 1 : 0;
  k.trans_y = p.y.transposed ? 1 : 0;
  k.ab_type = static_cast<std::uint8_t>(g.ab_type);
  k.d_type = static_cast<std::uint8_t>(g.d_type);
  k.pointer_mode = static_cast<std::uint8_t>(p.pointer_mode);
  k.bias = p.bias ? 1 : 0;
  k.align_x = pointer_alignment(p.x.data);
  k.align_y = pointer_alignment(p.y.data);
  k.align_c = pointer_alignment(g.C ? g.C : g.D);
  k.align_d = pointer_alignment(g.D);
  k.align_bias = pointer_alignment(g.bias);
  k.workspace_bytes = workspace_bytes;
  return k;
}

std::string describe(const GemmKey& k) {
  static const char* const modes[] = {"host alpha", "alpha vector, beta 0",
                                      "alpha vector, host beta"};
  const std::string ab = dtype_name(static_cast<DType>(k.ab_type));
  return "column-major m=" + std::to_string(k.m) + " n=" + std::to_string(k.n) +
         " k=" + std::to_string(k.k) + " op" + (k.trans_x ? "T" : "N") + "/op" +
         (k.trans_y ? "T" : "N") + " " + ab + " x " + ab + " -> " +
         dtype_name(static_cast<DType>(k.d_type)) + ", " + modes[k.pointer_mode % 3] +
         (k.bias ? ", bias epilogue" : "") + ", ld " + std::to_string(k.ldx) + "/" +
         std::to_string(k.ldy) + "/" + std::to_string(k.ldd) + ", alignment " +
         std::to_string(k.align_x) + "/" + std::to_string(k.align_y) + "/" +
         std::to_string(k.align_d) + " B";
}

}  // namespace peftrun::cuda
