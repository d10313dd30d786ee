// The CPU block emulator (kernels/emulated/block_emulator.h) catches what it claims to: barrier
// divergence, out-of-bounds indices, shared memory taken beyond the launch size, launch
// geometries CUDA refuses, and (through thread orders) a missing barrier; and it runs correct
// kernels, barriers included, to the same result under every order.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/block_context.h"
#include "kernels/emulated/block_emulator.h"

namespace peftrun::emu {
namespace {

LaunchGeometry geometry(int blocks, int threads, std::size_t smem) {
  LaunchGeometry g;
  g.grid_x = blocks;
  g.threads = threads;
  g.smem_bytes = smem;
  return g;
}

// out[block] = sum over threads of (thread + 1) * (block + 1), through block_sum.
struct SumKernel {
  static constexpr int kMaxThreads = 256;
  Span<float> out;
  template <class Ctx>
  void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carve(smem);
    const Span<float> scratch = carve.take<float>(static_cast<std::size_t>(ctx.threads()));
    const float v = static_cast<float>((ctx.thread() + 1) * (ctx.block_x() + 1));
    const float total = block_sum(ctx, scratch, v);
    if (ctx.thread() == 0) out[static_cast<std::size_t>(ctx.block_x())] = total;
  }
};

TEST(BlockEmulator, BlockSumIsExactUnderEveryOrder) {
  for (const Schedule s : {Schedule::kInOrder, Schedule::kReversed, Schedule::kShuffled}) {
    std::vector<float> out(3, -1.0f);
    EmulatedLauncher{s}("sum", geometry(3, 64, 64 * sizeof(float)),
                        SumKernel{{out.data(), out.size()}});
    EXPECT_EQ(out, (std::vector<float>{2080.0f, 4160.0f, 6240.0f})) << schedule_name(s);
  }
}

// Thread t writes smem[t] and reads its neighbour's slot: with the barrier every order agrees,
// without it the result depends on who ran first.
template <bool kWithBarrier>
struct NeighbourKernel {
  static constexpr int kMaxThreads = 32;
  Span<float> out;
  template <class Ctx>
  void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carve(smem);
    const Span<float> s = carve.take<float>(32);
    const std::size_t t = static_cast<std::size_t>(ctx.thread());
    s[t] = static_cast<float>(t);
    if (kWithBarrier) ctx.sync();
    out[t] = s[(t + 1) % 32];
  }
};

template <bool kWithBarrier>
std::vector<float> run_neighbours(Schedule s) {
  std::vector<float> out(32, -1.0f);
  EmulatedLauncher{s}("neighbours", geometry(1, 32, 32 * sizeof(float)),
                      NeighbourKernel<kWithBarrier>{{out.data(), out.size()}});
  return out;
}

TEST(BlockEmulator, MissingBarrierShowsUnderAnotherOrder) {
  EXPECT_EQ(run_neighbours<true>(Schedule::kInOrder), run_neighbours<true>(Schedule::kReversed));
  EXPECT_NE(run_neighbours<false>(Schedule::kInOrder), run_neighbours<false>(Schedule::kReversed));
}

struct DivergentKernel {
  static constexpr int kMaxThreads = 64;
  template <class Ctx>
  void operator()(const Ctx& ctx, Span<unsigned char>) const {
    if (ctx.thread() == 3) return;  // leaves while the others wait
    ctx.sync();
  }
};

TEST(BlockEmulator, BarrierDivergenceIsAnError) {
  try {
    EmulatedLauncher{}("divergent", geometry(2, 64, 0), DivergentKernel{});
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("divergent block (0,0,0): barrier divergence"),
              std::string::npos)
        << e.what();
  }
}

struct OutOfBoundsKernel {
  static constexpr int kMaxThreads = 64;
  Span<float> out;
  template <class Ctx>
  void operator()(const Ctx& ctx, Span<unsigned char>) const {
    out[static_cast<std::size_t>(ctx.thread())] = 1.0f;  // 64 threads, 63 elements
  }
};

TEST(BlockEmulator, OutOfBoundsIndexIsNamed) {
  std::vector<float> out(64, 0.0f);
  try {
    EmulatedLauncher{}("oob", geometry(1, 64, 0), OutOfBoundsKernel{{out.data(), 63}});
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("index 63 outside a buffer of 63 elements"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(out[63], 0.0f);  // the write did not happen
}

struct GreedySharedKernel {
  static constexpr int kMaxThreads = 32;
  template <class Ctx>
  void operator()(const Ctx&, Span<unsigned char> smem) const {
    SharedCarver carve(smem);
    carve.take<float>(8);
    carve.take<float>(8);  // 64 bytes in all
  }
};

TEST(BlockEmulator, SharedMemoryBeyondTheLaunchIsAnError) {
  EXPECT_THROW(EmulatedLauncher{}("greedy", geometry(1, 32, 48), GreedySharedKernel{}),
               std::runtime_error);
  EXPECT_NO_THROW(EmulatedLauncher{}("greedy", geometry(1, 32, 64), GreedySharedKernel{}));
}

TEST(BlockEmulator, RefusesGeometriesCudaRefuses) {
  EXPECT_THROW(
      EmulatedLauncher{}("big", geometry(1, 32, kMaxSharedBytesSm80 + 1), GreedySharedKernel{}),
      std::invalid_argument);
  EXPECT_THROW(EmulatedLauncher{}("wide", geometry(1, 64, 64), GreedySharedKernel{}),
               std::invalid_argument);  // more threads than kMaxThreads
  LaunchGeometry g = geometry(1, 32, 64);
  g.grid_y = kMaxGridYZ + 1;
  EXPECT_THROW(EmulatedLauncher{}("tall", g, GreedySharedKernel{}), std::invalid_argument);
}

}  // namespace
}  // namespace peftrun::emu
