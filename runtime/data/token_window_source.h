// data.format: tokens. A token file cut into windows by BatchLoader (batch_loader.h), whose
// order and windows are unchanged: one stream, no document boundaries, no segments.
#pragma once

#include "runtime/data/batch_loader.h"
#include "runtime/data/data_source.h"

namespace peftrun {

class TokenWindowSource : public DataSource {
 public:
  explicit TokenWindowSource(BatchLoader loader) : loader_(std::move(loader)) {}

  std::uint64_t num_rows() const override { return loader_.num_windows(); }
  bool uses_segments() const override { return false; }
  std::string describe() const override;
  void fill_batch(std::uint64_t first_sample, int batch, const BatchBuffers& out) override;
  int fill_eval_batch(int batch_index, int batch, const BatchBuffers& out) const override;

  const BatchLoader& loader() const { return loader_; }

 private:
  BatchLoader loader_;
};

}  // namespace peftrun
