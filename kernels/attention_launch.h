// The host side of flash attention on the GPU, shared by attention_cuda.cu and the CPU emulator
// tests: shape and workspace checks, and the choice of kernel: tensor cores
// (attention_tc_blocks.h) for fp16 / bf16 activations with head_dim a multiple of 16 up to 128,
// forward and backward; otherwise on the CUDA cores (attention_blocks.h).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include "kernels/attention.h"
#include "kernels/attention_blocks.h"
#include "kernels/attention_tc_blocks.h"
#include "kernels/block_context.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

inline void check_attention_shape(const char* op, int B, int T, int H, int KV, int hd) {
  require(B >= 1 && T >= 1 && H >= 1 && KV >= 1, op, "B, T, H and KV must be >= 1");
  require(
      H % KV == 0, op,
      "n_heads " + std::to_string(H) + " is not a multiple of n_kv_heads " + std::to_string(KV));
  require(B <= kMaxGridYZ && H <= kMaxGridYZ, op, "B and H must be <= 65535");
  require(cuda::attention_head_dim_supported(hd), op,
          "head_dim " + std::to_string(hd) + " is not supported (a multiple of 8 in [8, 256])");
}

// Grid of a flash kernel: one block per Tile::kRows rows of a head (`heads`: query heads, or kv
// heads for dK/dV) of a sequence.
template <class Tile>
LaunchGeometry flash_geometry(int T, int heads, int B, std::size_t smem_bytes) {
  LaunchGeometry g;
  g.grid_x = ceil_div(T, Tile::kRows);
  g.grid_y = heads;
  g.grid_z = B;
  g.threads = Tile::kThreads;
  g.smem_bytes = smem_bytes;
  return g;
}

template <class Launcher>
void launch_attention_forward(const Launcher& launch, const void* q, const void* k, const void* v,
                              const std::int32_t* segment, int window, float scale, float softcap,
                              void* out, float* lse, int B, int T, int H, int KV, int hd,
                              DType dtype) {
  const char* op = "attention_forward";
  check_attention_shape(op, B, T, H, KV, hd);
  require(q && k && v && out && lse, op, "null tensor");
  require(window >= 0, op, "window must be >= 0 (0 = no sliding window)");
  require(std::isfinite(scale) && scale > 0.0f, op, "scale must be finite and > 0");
  require(std::isfinite(softcap) && softcap >= 0.0f, op,
          "softcap must be finite and >= 0 (0 = none)");
  const AttentionShape s{B, T, H, KV, hd, window};
  const std::size_t nq = static_cast<std::size_t>(B) * T * H * hd;
  const std::size_t nkv = static_cast<std::size_t>(B) * T * KV * hd;
  const std::size_t nrow = static_cast<std::size_t>(B) * H * T;
  const std::size_t nseg = segment ? static_cast<std::size_t>(B) * T : 0;
  with_storage(dtype, [&](auto st) {
    using St = decltype(st);
    using E = typename St::Elem;
    if constexpr (!std::is_same_v<St, F32Storage>) {
      if (attention_tc_supported(hd)) {  // 16-bit activations: tensor cores
        with_tc_tile(hd, [&](auto tile) {
          using Tile = decltype(tile);
          using K = FlashForwardTc<Tile, St>;
          const K kern{{static_cast<const E*>(q), nq},
                       {static_cast<const E*>(k), nkv},
                       {static_cast<const E*>(v), nkv},
                       {segment, nseg},
                       {static_cast<E*>(out), nq},
                       {lse, nrow},
                       s,
                       scale,
                       softcap};
          LaunchGeometry g = flash_geometry<Tile>(T, H, B, shared_bytes<typename K::Shared>());
          launch("attention_forward_tc", g, kern);
        });
        return;
      }
    }
    with_flash_tile(hd, [&](auto tile) {
      using Tile = decltype(tile);
      const FlashForward<Tile, St> kern{{static_cast<const E*>(q), nq},
                                        {static_cast<const E*>(k), nkv},
                                        {static_cast<const E*>(v), nkv},
                                        {segment, nseg},
                                        {static_cast<E*>(out), nq},
                                        {lse, nrow},
                                        s,
                                        scale,
                                        softcap};
      LaunchGeometry g =
          flash_geometry<Tile>(T, H, B, shared_bytes<typename FlashForward<Tile, St>::Shared>(hd));
      launch(op, g, kern);
    });
  });
}

template <class Launcher>
void launch_attention_backward(const Launcher& launch, const void* dout, const void* q,
                               const void* k, const void* v, const void* out, const float* lse,
                               const std::int32_t* segment, int window, float scale, float softcap,
                               void* dq, void* dk, void* dv, void* workspace,
                               std::size_t workspace_bytes, int B, int T, int H, int KV, int hd,
                               DType dtype) {
  const char* op = "attention_backward";
  check_attention_shape(op, B, T, H, KV, hd);
  require(dout && q && k && v && out && lse && dq && dk && dv, op, "null tensor");
  const std::size_t need = cuda::attention_backward_workspace_bytes(B, T, H);
  require(
      workspace && workspace_bytes >= need, op,
      "workspace of " + std::to_string(workspace_bytes) + " bytes; needs " + std::to_string(need));
  require(reinterpret_cast<std::uintptr_t>(workspace) % 16 == 0, op,
          "workspace must be 16-byte aligned");
  require(window >= 0, op, "window must be >= 0 (0 = no sliding window)");
  require(std::isfinite(scale) && scale > 0.0f, op, "scale must be finite and > 0");
  require(std::isfinite(softcap) && softcap >= 0.0f, op,
          "softcap must be finite and >= 0 (0 = none)");
  const AttentionShape s{B, T, H, KV, hd, window};
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
    if constexpr (!std::is_same_v<St, F32Storage>) {
      if (attention_tc_supported(hd)) {  // 16-bit activations: tensor cores
        with_tc_tile(hd, [&](auto tile) {
          using Tile = decltype(tile);
          using Kdq = FlashBackwardDqTc<Tile, St>;
          const Kdq kdq{sq,
                        sk,
                        sv,
                        sdo,
                        {segment, nseg},
                        {lse, nrow},
                        {dvec, nrow},
                        {static_cast<E*>(dq), nq},
                        s,
                        scale,
                        softcap};
          LaunchGeometry g = flash_geometry<Tile>(T, H, B, shared_bytes<typename Kdq::Shared>());
          launch("attention_backward_dq_tc", g, kdq);

          using Kkv = FlashBackwardDkDvTc<Tile, St>;
          const Kkv kdkv{sq,
                         sk,
                         sv,
                         sdo,
                         {segment, nseg},
                         {lse, nrow},
                         {dvec, nrow},
                         {static_cast<E*>(dk), nkv},
                         {static_cast<E*>(dv), nkv},
                         s,
                         scale,
                         softcap};
          g = flash_geometry<Tile>(T, KV, B, shared_bytes<typename Kkv::Shared>());
          launch("attention_backward_dkdv_tc", g, kdkv);
        });
        return;
      }
    }
    with_flash_tile(hd, [&](auto tile) {
      using Tile = decltype(tile);
      const FlashBackwardDq<Tile, St> kdq{sq,
                                          sk,
                                          sv,
                                          sdo,
                                          {segment, nseg},
                                          {lse, nrow},
                                          {dvec, nrow},
                                          {static_cast<E*>(dq), nq},
                                          s,
                                          scale,
                                          softcap};
      LaunchGeometry g = flash_geometry<Tile>(
          T, H, B, shared_bytes<typename FlashBackwardDq<Tile, St>::Shared>(hd));
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
                                             scale,
                                             softcap};
      g = flash_geometry<Tile>(T, KV, B,
                               shared_bytes<typename FlashBackwardDkDv<Tile, St>::Shared>(hd));
      launch("attention_backward_dkdv", g, kdkv);
    });
  });
}

}  // namespace peftrun::blocks
