#include "runtime/data/token_window_source.h"

namespace peftrun {

std::string TokenWindowSource::describe() const {
  return std::to_string(loader_.num_windows()) + " training windows of " +
         std::to_string(loader_.seq_len()) + " tokens";
}

void TokenWindowSource::fill_batch(std::uint64_t first_sample, int batch, const BatchBuffers& out) {
  loader_.fill_batch(first_sample, batch, out.inputs, out.targets, out.positions);
}

int TokenWindowSource::fill_eval_batch(int batch_index, int batch, const BatchBuffers& out) const {
  return loader_.fill_eval_batch(batch_index, batch, out.inputs, out.targets, out.positions);
}

}  // namespace peftrun
