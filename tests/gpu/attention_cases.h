// Parity cases of the flash attention kernels against the CPU twin (kernels/attention_cpu.cpp),
// run by tests/gpu/attention_parity_test.cpp on a GPU and by tests/emulated_attention_test.cpp in
// the CPU emulator (see tests/gpu/parity_support.h). The reference runs in double on exactly the
// values the kernel sees (inputs rounded to the storage dtype first); outputs, dq, dk and dv are
// compared by ||out - ref|| / ||ref||. What forward saves for backward differs by design (probs
// on the CPU, logsumexp on the GPU), so it is only used, not compared.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/attention.h"
#include "tests/gpu/parity_support.h"

namespace peftrun::gpu_testing {

struct AttentionCase {
  const char* name;
  int B, T, H, KV, hd;
  int docs = 0;              // > 0: packed, this many documents per sequence (segment ids)
  float input_scale = 1.0f;  // q and k ~ U(-scale, scale): larger = peakier softmax
  int window = 0;            // > 0: sliding window of this many keys
  float score_d = 0.0f;      // > 0: scores scaled by 1 / sqrt(score_d) instead of head_dim's
  float softcap = 0.0f;      // > 0: scores capped at softcap * tanh(S / softcap) (Gemma 2)
};

// Segment ids [B*T]: each sequence cut at docs - 1 random distinct positions.
inline std::vector<std::int32_t> make_segments(int B, int T, int docs, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::int32_t> seg(static_cast<std::size_t>(B) * T);
  for (int b = 0; b < B; ++b) {
    std::vector<int> cuts(static_cast<std::size_t>(std::max(T - 1, 0)));
    for (int i = 0; i < T - 1; ++i) cuts[static_cast<std::size_t>(i)] = i + 1;
    std::shuffle(cuts.begin(), cuts.end(), rng);
    cuts.resize(static_cast<std::size_t>(std::min(docs - 1, T - 1)));
    std::sort(cuts.begin(), cuts.end());
    int doc = 0;
    for (int t = 0; t < T; ++t) {
      while (doc < static_cast<int>(cuts.size()) && t >= cuts[static_cast<std::size_t>(doc)]) ++doc;
      seg[static_cast<std::size_t>(b) * T + t] = 7 * b + doc;  // ids need not be contiguous
    }
  }
  return seg;
}

template <class Env>
void check_attention(Env& env, const AttentionCase& c, DType dt) {
  const std::string where = std::string(c.name) + " " + dtype_name(dt);
  const std::uint64_t seed = seed_of(c.name);
  const std::size_t nq = static_cast<std::size_t>(c.B) * c.T * c.H * c.hd;
  const std::size_t nkv = static_cast<std::size_t>(c.B) * c.T * c.KV * c.hd;
  const std::size_t nrow = static_cast<std::size_t>(c.B) * c.H * c.T;
  const std::vector<float> q = rounded(random_floats(nq, seed + 1, c.input_scale), dt);
  const std::vector<float> k = rounded(random_floats(nkv, seed + 2, c.input_scale), dt);
  const std::vector<float> v = rounded(random_floats(nkv, seed + 3), dt);
  const std::vector<float> dout = rounded(random_floats(nq, seed + 4), dt);
  const std::vector<std::int32_t> seg =
      c.docs > 0 ? make_segments(c.B, c.T, c.docs, seed + 5) : std::vector<std::int32_t>{};

  // CPU twin in double.
  std::vector<double> out_ref(nq), probs(nrow * c.T), dq_ref(nq), dk_ref(nkv), dv_ref(nkv);
  const std::vector<double> qd = to_double(q), kd = to_double(k), vd = to_double(v),
                            dod = to_double(dout);
  cpu::attention_forward<double>(
      qd.data(), kd.data(), vd.data(), seg.empty() ? nullptr : seg.data(), c.window,
      attention_scale<double>(c.score_d > 0 ? c.score_d : c.hd), c.softcap, out_ref.data(),
      probs.data(), c.B, c.T, c.H, c.KV, c.hd);
  cpu::attention_backward<double>(
      dod.data(), qd.data(), kd.data(), vd.data(), probs.data(), c.window,
      attention_scale<double>(c.score_d > 0 ? c.score_d : c.hd), c.softcap, dq_ref.data(),
      dk_ref.data(), dv_ref.data(), c.B, c.T, c.H, c.KV, c.hd);

  auto d_q = env.upload(encode(q, dt));
  auto d_k = env.upload(encode(k, dt));
  auto d_v = env.upload(encode(v, dt));
  auto d_seg = env.upload(seg);
  const std::int32_t* seg_ptr = seg.empty() ? nullptr : d_seg.data();
  auto d_out = env.template poisoned<unsigned char>(nq * dtype_size(dt));
  auto d_lse = env.template poisoned<float>(nrow);
  env.attention_forward(d_q.data(), d_k.data(), d_v.data(), seg_ptr, c.window,
                        attention_scale<float>(c.score_d > 0 ? c.score_d : c.hd), c.softcap,
                        d_out.data(), d_lse.data(), c.B, c.T, c.H, c.KV, c.hd, dt);
  const double tol = tolerance(dt);
  expect_close(where, "out", decode(env.download(d_out), dt), out_ref, tol);

  auto d_dout = env.upload(encode(dout, dt));
  auto d_dq = env.template poisoned<unsigned char>(nq * dtype_size(dt));
  auto d_dk = env.template poisoned<unsigned char>(nkv * dtype_size(dt));
  auto d_dv = env.template poisoned<unsigned char>(nkv * dtype_size(dt));
  const std::size_t ws_bytes = cuda::attention_backward_workspace_bytes(c.B, c.T, c.H);
  auto d_ws = env.template poisoned<unsigned char>(ws_bytes);
  env.attention_backward(
      d_dout.data(), d_q.data(), d_k.data(), d_v.data(), d_out.data(), d_lse.data(), seg_ptr,
      c.window, attention_scale<float>(c.score_d > 0 ? c.score_d : c.hd), c.softcap, d_dq.data(),
      d_dk.data(), d_dv.data(), d_ws.data(), ws_bytes, c.B, c.T, c.H, c.KV, c.hd, dt);
  expect_close(where, "dq", decode(env.download(d_dq), dt), dq_ref, tol);
  expect_close(where, "dk", decode(env.download(d_dk), dt), dk_ref, tol);
  expect_close(where, "dv", decode(env.download(d_dv), dt), dv_ref, tol);
}

template <class Env>
void check_attention_all_dtypes(Env& env, const AttentionCase& c) {
  for (const DType dt : kAllDTypes) check_attention(env, c, dt);
}

// Shapes, masks and workspaces the kernels must refuse, with std::invalid_argument.
template <class Env>
void check_attention_refusals(Env& env) {
  auto buf = env.template poisoned<unsigned char>(1 << 16);
  auto lse = env.template poisoned<float>(1024);
  void* p = buf.data();
  auto forward = [&](int H, int KV, int hd) {
    env.attention_forward(p, p, p, nullptr, 0, 1.0f, 0.0f, p, lse.data(), 1, 4, H, KV, hd,
                          DType::kF32);
  };
  EXPECT_THROW(forward(4, 2, 12), std::invalid_argument);   // not a multiple of 8
  EXPECT_THROW(forward(4, 2, 264), std::invalid_argument);  // above 256
  EXPECT_THROW(forward(4, 3, 64), std::invalid_argument);   // H % KV != 0
  EXPECT_THROW(env.attention_forward(nullptr, p, p, nullptr, 0, 1.0f, 0.0f, p, lse.data(), 1, 4, 2,
                                     1, 64, DType::kF32),
               std::invalid_argument);
  const std::size_t need = cuda::attention_backward_workspace_bytes(1, 4, 2);
  EXPECT_THROW(env.attention_backward(p, p, p, p, p, lse.data(), nullptr, 0, 1.0f, 0.0f, p, p, p, p,
                                      need - 1, 1, 4, 2, 1, 64, DType::kF32),
               std::invalid_argument);
  EXPECT_THROW(env.attention_forward(p, p, p, nullptr, -1, 1.0f, 0.0f, p, lse.data(), 1, 4, 2, 1,
                                     64, DType::kF32),
               std::invalid_argument);  // a negative window
  EXPECT_THROW(env.attention_forward(p, p, p, nullptr, 0, 1.0f, -1.0f, p, lse.data(), 1, 4, 2, 1,
                                     64, DType::kF32),
               std::invalid_argument);  // a negative softcap
}

// The named cases both runners use.
namespace attention_cases {
// The tiny config's attention (dim 128, 4 heads, 2 kv heads: head_dim 32), T past one tile.
inline const AttentionCase kTinyConfig{"TinyConfigHd32", 2, 40, 4, 2, 32};
inline const AttentionCase kMhaHd64{"MhaHd64Tail", 1, 70, 2, 2, 64};
inline const AttentionCase kGqa2Hd128{"Gqa2Hd128", 1, 65, 4, 2, 128};
inline const AttentionCase kGqa4Hd128{"Gqa4Hd128", 2, 33, 8, 2, 128};
inline const AttentionCase kMqa8Hd64{"Gqa8Kv1Hd64", 1, 47, 8, 1, 64};
inline const AttentionCase kHd256{"Gqa2Hd256", 1, 45, 2, 1, 256};
inline const AttentionCase kHd8{"Hd8", 2, 37, 2, 1, 8};
inline const AttentionCase kHd40{"Hd40OddColumns", 1, 50, 4, 4, 40};
inline const AttentionCase kSingleToken{"SingleToken", 3, 1, 4, 2, 64};
inline const AttentionCase kExactTiles{"ExactTiles", 1, 64, 2, 1, 64};
inline const AttentionCase kPacked{"PackedThreeDocs", 2, 100, 4, 2, 64, 3};
inline const AttentionCase kPackedManyShort{"PackedManyShortDocs", 1, 70, 2, 1, 32, 20};
inline const AttentionCase kPeaky{"LargeScores", 1, 50, 2, 1, 64, 0, 4.0f};
// Sliding windows: shorter than a tile, not a multiple of one, longer than the sequence (no
// effect), with packed documents, on the tensor-core head widths (in fp16 / bf16) and not.
inline const AttentionCase kWindow5{"Window5", 2, 100, 4, 2, 32, 0, 1.0f, 5};
inline const AttentionCase kWindow45Hd64{"Window45Hd64", 1, 130, 4, 1, 64, 0, 1.0f, 45};
inline const AttentionCase kWindow33Hd40{"Window33Hd40", 1, 97, 2, 2, 40, 0, 1.0f, 33};
inline const AttentionCase kWindowPacked{"Window17Packed", 2, 90, 4, 2, 64, 4, 1.0f, 17};
inline const AttentionCase kWindowLonger{"WindowLongerThanT", 1, 40, 2, 1, 32, 0, 1.0f, 64};
// Gemma 3's kind: a score scale apart from head_dim's, with a window, on tensor cores too.
inline const AttentionCase kScoreScale{"ScoreScaleWindow9Hd64", 1, 80, 4, 2, 64, 0, 2.0f, 9, 16.0f};
// Gemma 2's soft-capped scores (a cap of 2 on scores of a few units, so tanh bends), with
// Gemma 2's other attention traits: on the tensor cores (head_dim 64) with a window and a
// score scale, and on the CUDA cores (head_dim 40) packed.
inline const AttentionCase kSoftcap{
    "SoftcapWindow21Hd64", 1, 90, 4, 2, 64, 0, 3.0f, 21, 48.0f, 2.0f};
inline const AttentionCase kSoftcapPacked{
    "SoftcapPackedHd40", 2, 70, 4, 2, 40, 3, 3.0f, 0, 0.0f, 2.0f};
}  // namespace attention_cases

inline std::vector<AttentionCase> all_attention_cases() {
  using namespace attention_cases;
  return {kTinyConfig, kMhaHd64, kGqa2Hd128,    kGqa4Hd128,    kMqa8Hd64,     kHd256,
          kHd8,        kHd40,    kSingleToken,  kExactTiles,   kPacked,       kPackedManyShort,
          kPeaky,      kWindow5, kWindow45Hd64, kWindow33Hd40, kWindowPacked, kWindowLonger,
          kScoreScale, kSoftcap, kSoftcapPacked};
}

}  // namespace peftrun::gpu_testing
