// data.train / data.eval as a DataSource, whatever data.format says: token files directly;
// JSONL through the model's tokenizer.json (data.tokenizer, else model.path), the dataset
// formats (example_formats.h), the cache next to the source (dataset_cache.h) and row packing
// (packed_rows.h). The tokenizer is loaded once, on first use.
#pragma once

#include <iosfwd>
#include <memory>
#include <optional>
#include <string>

#include "configs/config.h"
#include "runtime/data/data_source.h"
#include "runtime/tokenizer/model_tokens.h"
#include "runtime/tokenizer/tokenizer.h"

namespace peftrun {

class DatasetOpener {
 public:
  // `write_cache`: whether this process may write caches (rank 0 of a job; the others
  // tokenize in memory when there is no valid cache yet). Progress goes to `log`.
  DatasetOpener(const Config& config, std::ostream& log, bool write_cache);
  ~DatasetOpener();

  std::unique_ptr<DataSource> open_train();
  std::unique_ptr<DataSource> open_eval();  // data.eval must be set
  // Throws std::runtime_error naming the file (and FILE:LINE for a malformed JSONL line).
  std::unique_ptr<DataSource> open(const std::string& path, DataFormat format);

 private:
  void load_tokenizer();

  const Config& config_;
  std::ostream& log_;
  bool write_cache_;
  std::optional<Tokenizer> tokenizer_;
  ModelTokens model_tokens_;
};

}  // namespace peftrun
