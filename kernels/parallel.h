// The CPU backend's own threads, for the ops BLAS does not run: row-wise and element-wise loops
// (cross-entropy rows, SwiGLU, RMSNorm, RoPE, residual adds, attention's softmax rows, DoRA's
// passes) that would otherwise run on one core while the others wait.
//
// parallel_for splits [0, n) into contiguous parts, one per thread, the calling thread taking
// the first; it returns when every part is done. Each index is computed by exactly one thread
// with the same code as the serial loop, so results do not depend on the thread count (callers
// that reduce keep per-row results and sum them in order afterwards).
#pragma once

#include <cstddef>
#include <functional>

namespace peftrun::cpu {

// Threads parallel_for may use (1 = run inline). Set with the BLAS threads
// (cpu::set_blas_threads); 0 = every core.
void set_kernel_threads(int threads);
int kernel_threads();

// fn(begin, end) over [0, n), in parts of at least min_part indices (fewer parts when n is
// small, so tiny loops do not pay for waking threads). Called from one thread at a time; a call
// made while another is running (from a second thread, or nested) runs inline.
void parallel_for(std::size_t n, std::size_t min_part,
                  const std::function<void(std::size_t, std::size_t)>& fn);

// Work below about this many elements costs more to hand to a thread than to run inline.
constexpr std::size_t kMinPartElements = std::size_t(1) << 14;

// parallel_for's min_part for a loop whose every index covers `per_index` elements (1 for an
// element-wise loop, the row length for a row loop).
inline std::size_t min_part_for(std::size_t per_index) {
  return per_index >= kMinPartElements ? 1 : kMinPartElements / (per_index ? per_index : 1);
}

}  // namespace peftrun::cpu
