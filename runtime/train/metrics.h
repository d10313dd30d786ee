// metrics.jsonl: one JSON object per line, appended and flushed as each record is made, so a
// run that dies keeps every metric up to its last step. Training records carry
// step, loss, lr, grad_norm, tokens_per_s (and more); evaluation records step and eval_loss.
#pragma once

#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

namespace peftrun {

class MetricsWriter {
 public:
  // Truncates `path` (a fresh run owns its output folder), or appends to it when `append` (a
  // resumed run continues its history). Throws naming the file on failure.
  explicit MetricsWriter(const std::string& path, bool append = false);
  void write(const nlohmann::json& record);

 private:
  std::string path_;
  std::ofstream out_;
};

// Rewrites `path` (atomically) keeping only the complete records of steps <= `step`: a run
// resumed from step `step` continues the history of the run it resumes, not of the steps that
// run took after its checkpoint. A missing file is left missing.
void drop_metrics_after(const std::string& path, int step);

}  // namespace peftrun
