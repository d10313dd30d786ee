#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kernels/cross_entropy_math.h"
#include "kernels/exp_math.h"
#include "kernels/parallel.h"
#include "kernels/softcap_math.h"

namespace peftrun::cpu {

namespace {

// Exponentials computed per vectorised pass (on the stack when there is no dlogits to keep them).
constexpr int kExpBlock = 512;

// Per row: loss = logsumexp(x) - x[target] with the max subtracted before exp, the normaliser and
// the loss accumulated in double. The gradient softmax - onehot is written in the second pass,
// element j only after x[j] has been read, which is what makes dlogits == logits legal.
//
// With a softcap the row is first capped into a per-thread copy z (the capped logits, which the
// gradient's cap derivative needs after d has overwritten an aliased row), and the loss and
// softmax are those of z.
template <typename T>
void cross_entropy_rows(const T* logits, const std::int32_t* targets, T* dlogits, int r_begin,
                        int r_end, int V, T grad_scale, T softcap, double* row_loss) {
  thread_local std::vector<T> capped;  // per kernel thread: [V] with a softcap
  if (softcap > T(0)) capped.resize(static_cast<std::size_t>(V));
  for (int r = r_begin; r < r_end; ++r) {
    const T* x = logits + static_cast<std::size_t>(r) * V;                 // [V]
    T* d = dlogits ? dlogits + static_cast<std::size_t>(r) * V : nullptr;  // [V] or null
    const std::int32_t target = targets[r];
    if (target == kIgnoreIndex) {
      if (d) std::fill(d, d + V, T(0));
      continue;
    }
    if (softcap > T(0)) {
      for (int j = 0; j < V; ++j) capped[j] = softcapped(x[j], softcap);
      x = capped.data();
    }
    const T mx = *std::max_element(x, x + V);
    const T x_target = x[target];  // read before a possibly aliased d overwrites it
    // sum_j e^(x_j - max), a block at a time: the exps first (a loop GCC vectorises), then
    // their sum in j order in double (a loop it cannot, and need not, reorder). With d, the
    // exps are stashed there so the gradient pass does not evaluate them a second time.
    double sum = 0.0;
    T block[kExpBlock];
    for (int j0 = 0; j0 < V; j0 += kExpBlock) {
      const int len = std::min(kExpBlock, V - j0);
      T* e = d ? d + j0 : block;
      for (int j = 0; j < len; ++j) e[j] = exp_nonpositive(x[j0 + j] - mx);
      for (int j = 0; j < len; ++j) sum += static_cast<double>(e[j]);
    }
    row_loss[r] = ce_row_loss(static_cast<double>(mx), sum, static_cast<double>(x_target));
    if (d) {
      const T k = static_cast<T>(static_cast<double>(grad_scale) / sum);  // softmax * grad_scale
      for (int j = 0; j < V; ++j) d[j] = ce_softmax_grad(d[j], k);
      d[target] = ce_target_grad(d[target], grad_scale);
      if (softcap > T(0)) {
        for (int j = 0; j < V; ++j) d[j] *= softcapped_grad(x[j], softcap);
      }
    }
  }
}

}  // namespace

// Rows are independent: they are split over the kernel threads (parallel.h), each row's loss
// kept and the total summed in row order afterwards, so the result is the serial loop's bits.
template <typename T>
double cross_entropy_forward_backward(const T* logits, const std::int32_t* targets, T* dlogits,
                                      int n, int V, T grad_scale, T softcap) {
  thread_local std::vector<double> row_losses;  // grows once, then reused every chunk
  row_losses.assign(static_cast<std::size_t>(std::max(n, 0)), 0.0);
  double* row_loss = row_losses.data();
  const std::size_t rows_per_part = min_part_for(static_cast<std::size_t>(std::max(V, 0)));
  parallel_for(static_cast<std::size_t>(std::max(n, 0)), rows_per_part,
               [&](std::size_t r0, std::size_t r1) {
                 cross_entropy_rows(logits, targets, dlogits, int(r0), int(r1), V, grad_scale,
                                    softcap, row_loss);
               });
  double total = 0.0;
  for (int r = 0; r < n; ++r) {
    if (targets[r] != kIgnoreIndex) total += row_loss[r];
  }
  return total;
}

template double cross_entropy_forward_backward<float>(const float*, const std::int32_t*, float*,
                                                      int, int, float, float);
template double cross_entropy_forward_backward<double>(const double*, const std::int32_t*, double*,
                                                       int, int, double, double);

}  // namespace peftrun::cpu
