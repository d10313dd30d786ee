// The training loop (DESIGN §5): for each optimizer step, micro-batches -> forward/backward into
// the flat gradient buffer -> all-reduce -> non-finite check -> global-norm clipping -> AdamW ->
// metrics; periodic evaluation on the held-out split; the PEFT adapter written at the end.
#pragma once

#include <iosfwd>
#include <stdexcept>
#include <string>

#include "comm/communicator.h"
#include "configs/config.h"

namespace peftrun {

// Asked once per optimizer step whether this rank has been told to stop early (launch/signals.h
// answers from SIGTERM / SIGINT). The ranks agree on the answer through the communicator, so one
// rank being told is enough for all to stop after the same step.
class StopRequest {
 public:
  virtual ~StopRequest() = default;
  // 0 = keep training; otherwise a positive code saying why (the signal number).
  virtual int pending() const = 0;
};

struct TrainOptions {
  // Check every activation and gradient after each layer (naming the op, layer and tensor) and
  // every parameter after each step for non-finite values.
  bool debug = false;
  // Continue from a checkpoint: "latest" (OUTPUT/latest) or a checkpoint folder; empty = fresh.
  std::string resume;
  bool resume_force = false;          // accept differences in resume-safe keys (resume_plan.h)
  const StopRequest* stop = nullptr;  // nullptr = never stop early
  int local_ranks = 1;  // ranks on this machine (they share its memory); see BackendSetup
};

struct TrainSummary {
  int steps = 0;        // optimizer steps done when the run ended
  int total_steps = 0;  // train.steps
  // Non-zero when a StopRequest ended the run early (its code): `checkpoint_dir` then holds the
  // state after `steps` steps and no final adapter was written.
  int stopped_by = 0;
  std::string checkpoint_dir;    // the last checkpoint committed ("" = none)
  double initial_eval_loss = 0;  // NaN when there is no eval split
  double final_eval_loss = 0;
  double final_train_loss = 0;
  double tokens_per_s = 0;
  double seconds = 0;
  std::string adapter_dir;
  std::string backend;  // what trained: "cpu" or "cuda:0 NVIDIA H200 (...), bf16 compute"
  // CUDA: device allocations after the backend was built (the step loop must make none);
  // -1 on the CPU.
  long long device_allocations_in_loop = -1;
};

// A failure every rank agreed on (Communicator::agree): all ranks exit with it together.
struct AgreedError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Raised when training produced a non-finite loss or gradient (exit code 3 in the CLI).
struct NonFiniteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs the whole job described by `config`, logging human-readable lines to `log`, on the
// backend runtime.device chooses (training_backend.h; CUDA with several ranks needs `comm` to
// be the NCCL communicator, which launch/main.cpp asks for). Throws
// std::runtime_error (with the file/tensor/step named) on failure; the output folder then holds
// the metrics up to the failure and no partial adapter.
// With several ranks (`comm.world_size() > 1`) every rank calls this; each trains on its own
// disjoint part of every global batch, only rank 0 writes files, and `log` should be a sink
// on the other ranks.
TrainSummary run_training(const Config& config, const TrainOptions& options, std::ostream& log,
                          Communicator& comm);

}  // namespace peftrun
