#include "runtime/data/packed_source.h"

#include <algorithm>
#include <stdexcept>

#include "kernels/cross_entropy.h"

namespace peftrun {

PackedSource::PackedSource(TokenizedCorpus corpus, int seq_len, bool packing, std::uint64_t seed,
                           std::string path)
    : corpus_(std::move(corpus)),
      rows_(plan_rows(corpus_, seq_len, packing)),
      seq_len_(seq_len),
      packing_(packing),
      path_(std::move(path)),
      order_(rows_.num_rows(), seed) {
  if (rows_.num_rows() == 0) {
    throw std::runtime_error("data file '" + path_ +
                             "' has no document with a token to train on (" +
                             std::to_string(corpus_.num_docs()) + " documents)");
  }
}

std::string PackedSource::describe() const {
  std::uint64_t predictions = 0;
  for (const auto& c : rows_.chunks) predictions += c.length;
  const double fill = double(predictions) / (double(rows_.num_rows()) * seq_len_);
  return std::to_string(rows_.num_rows()) + (packing_ ? " packed" : " padded") + " rows of " +
         std::to_string(seq_len_) + " tokens from " + std::to_string(corpus_.num_docs()) +
         " documents (" + std::to_string(static_cast<int>(fill * 100 + 0.5)) + "% filled)";
}

void PackedSource::fill_row(std::uint64_t row, std::size_t slot, const BatchBuffers& out) const {
  const auto L = static_cast<std::size_t>(seq_len_);
  std::size_t pos = slot * L;
  const std::size_t end = pos + L;
  std::int32_t segment = 0;
  for (std::uint64_t k = rows_.row_offsets[row]; k < rows_.row_offsets[row + 1]; ++k, ++segment) {
    const PackedRows::Chunk& c = rows_.chunks[k];
    for (std::uint32_t j = 0; j < c.length; ++j, ++pos) {
      const std::uint64_t t = c.first + j;
      out.inputs[pos] = corpus_.tokens[t];
      out.targets[pos] = corpus_.trained[t + 1] ? corpus_.tokens[t + 1] : cpu::kIgnoreIndex;
      out.positions[pos] = static_cast<std::int32_t>(j);
      out.segments[pos] = segment;
    }
  }
  for (; pos < end; ++pos) {
    out.inputs[pos] = 0;
    out.targets[pos] = cpu::kIgnoreIndex;
    out.positions[pos] = 0;
    out.segments[pos] = -1;
  }
}

void PackedSource::fill_padding(std::size_t slot, const BatchBuffers& out) const {
  const auto L = static_cast<std::size_t>(seq_len_);
  std::fill(out.inputs + slot * L, out.inputs + (slot + 1) * L, 0);
  std::fill(out.targets + slot * L, out.targets + (slot + 1) * L, cpu::kIgnoreIndex);
  std::fill(out.positions + slot * L, out.positions + (slot + 1) * L, 0);
  std::fill(out.segments + slot * L, out.segments + (slot + 1) * L, -1);
}

void PackedSource::fill_batch(std::uint64_t first_sample, int batch, const BatchBuffers& out) {
  for (int r = 0; r < batch; ++r) {
    fill_row(order_.row_of(first_sample + static_cast<std::uint64_t>(r)),
             static_cast<std::size_t>(r), out);
  }
}

int PackedSource::fill_eval_batch(int batch_index, int batch, const BatchBuffers& out) const {
  const int n = num_eval_batches(batch);
  if (batch_index < 0 || batch_index >= n) {
    throw std::out_of_range("fill_eval_batch: batch " + std::to_string(batch_index) +
                            " outside [0, " + std::to_string(n) + ") for '" + path_ + "'");
  }
  int real = 0;
  for (int r = 0; r < batch; ++r) {
    const std::uint64_t row = static_cast<std::uint64_t>(batch_index) * batch + r;
    if (row < rows_.num_rows()) {
      fill_row(row, static_cast<std::size_t>(r), out);
      ++real;
    } else {
      fill_padding(static_cast<std::size_t>(r), out);
    }
  }
  return real;
}

}  // namespace peftrun
