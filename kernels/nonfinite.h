// Non-finite detection over a buffer: the overflow test of fp16 dynamic loss scaling (over the
// flat gradient buffer) and the per-op check of --debug (over activations of any storage type).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda_memory.h"
#include "kernels/dtype.h"

namespace peftrun {

// What a scan found. Scans accumulate: count adds up and first_index is the smallest index
// seen, so one report can cover several buffers (then first_index is within whichever buffer
// held it; scan them one report each to name the tensor).
struct NonfiniteReport {
  std::uint64_t count = 0;                        // non-finite elements (Inf or NaN)
  std::uint64_t first_index = ~std::uint64_t(0);  // ~0 = none
  bool found() const { return count != 0; }
};

namespace cpu {

// Adds the non-finite elements of x[0..n) (storage `type`, host memory) to report.
void nonfinite_scan(const void* x, DType type, std::size_t n, NonfiniteReport& report);

}  // namespace cpu

namespace cuda {

// report: a NonfiniteReport in device memory. reset writes the empty report; scan adds x's
// non-finite elements (x: n device elements of `type`). Copy it to the host (after the stream's
// work) to read it: one 16-byte copy per check.
void nonfinite_reset(NonfiniteReport* report, Stream stream);
void nonfinite_scan(const void* x, DType type, std::size_t n, NonfiniteReport* report,
                    Stream stream);

}  // namespace cuda
}  // namespace peftrun
