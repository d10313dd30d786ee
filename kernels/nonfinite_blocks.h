// The non-finite scan's CUDA kernels as block functors (see kernels/block_context.h) and their
// launch code, shared by nonfinite_cuda.cu and the CPU emulator tests. The report is two
// unsigned 64-bit words in device memory (NonfiniteReport: count, first_index), updated with
// integer atomics (sum and minimum), so the result does not depend on the order of the blocks.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/block_context.h"
#include "kernels/nonfinite.h"
#include "kernels/storage.h"

namespace peftrun::blocks {

static_assert(sizeof(NonfiniteReport) == 2 * sizeof(unsigned long long),
              "NonfiniteReport is read as two 64-bit words");

PEFTRUN_HD bool is_finite_value(float v) {
#if defined(__CUDA_ARCH__)
  return isfinite(v);
#else
  return std::isfinite(v);
#endif
}

// report = {0, ~0}.
struct NonfiniteReset {
  static constexpr int kMaxThreads = 1;
  Span<unsigned long long> report;  // [2]

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx&, Span<unsigned char>) const {
    report[0] = 0;
    report[1] = ~0ull;
  }
};

struct NonfiniteShared {
  Span<unsigned long long> block;  // [2]: this block's count and first index
  PEFTRUN_HD static NonfiniteShared carve(SharedCarver& c) {
    return {c.take<unsigned long long>(2)};
  }
};

// Each block gathers its hits in shared memory and touches the global report only when it saw
// one, so a clean buffer (the usual case) costs no global atomics.
template <class St>
struct NonfiniteScan {
  using E = typename St::Elem;
  static constexpr int kMaxThreads = kPointwiseThreads;
  Span<const E> x;
  Span<unsigned long long> report;  // [2]
  std::int64_t n;

  template <class Ctx>
  PEFTRUN_HD void operator()(const Ctx& ctx, Span<unsigned char> smem) const {
    SharedCarver carver(smem);
    const Span<unsigned long long> block = NonfiniteShared::carve(carver).block;
    if (ctx.thread() == 0) {
      block[0] = 0;
      block[1] = ~0ull;
    }
    ctx.sync();
    unsigned long long count = 0, first = ~0ull;
    for (std::int64_t i = pointwise_first(ctx); i < n; i += pointwise_stride(ctx)) {
      if (!is_finite_value(St::to_float(x[static_cast<std::size_t>(i)]))) {
        if (count == 0) first = static_cast<unsigned long long>(i);  // a thread's indices grow
        ++count;
      }
    }
    if (count) {
      atomic_add(block, 0, count);
      atomic_min(block, 1, first);
    }
    ctx.sync();
    if (ctx.thread() == 0 && block[0]) {
      atomic_add(report, 0, block[0]);
      atomic_min(report, 1, block[1]);
    }
  }
};

inline Span<unsigned long long> report_words(NonfiniteReport* report) {
  return {reinterpret_cast<unsigned long long*>(report), 2};
}

template <class Launcher>
void launch_nonfinite_reset(const Launcher& launch, NonfiniteReport* report) {
  require(report != nullptr, "nonfinite_reset", "null report");
  LaunchGeometry g;
  g.threads = 1;
  launch("nonfinite_reset", g, NonfiniteReset{report_words(report)});
}

template <class Launcher>
void launch_nonfinite_scan(const Launcher& launch, const void* x, DType type, std::size_t n,
                           NonfiniteReport* report) {
  if (n == 0) return;
  require(x && report, "nonfinite_scan", "null tensor");
  with_storage(type, [&](auto st) {
    using St = decltype(st);
    LaunchGeometry g = pointwise_geometry(static_cast<std::int64_t>(n));
    g.smem_bytes = shared_bytes<NonfiniteShared>();
    launch("nonfinite_scan", g,
           NonfiniteScan<St>{{static_cast<const typename St::Elem*>(x), n},
                             report_words(report),
                             static_cast<std::int64_t>(n)});
  });
}

}  // namespace peftrun::blocks
