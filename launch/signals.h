// Preemption: SIGTERM or SIGINT asks the run to stop after the current step with a checkpoint
// (the trainer polls StopRequest once per step and the ranks agree on it); a second signal of
// either kind aborts at once with exit status 128 + the signal number.
#pragma once

#include <string>

#include "runtime/train/trainer.h"

namespace peftrun {

// Installs the handlers for its lifetime (one instance per process); the previous handlers are
// restored when it is destroyed. `who` prefixes the one line each signal prints on stderr
// ("peftrun: rank 1: ").
class SignalStop final : public StopRequest {
 public:
  explicit SignalStop(const std::string& who);
  ~SignalStop() override;
  SignalStop(const SignalStop&) = delete;
  SignalStop& operator=(const SignalStop&) = delete;

  int pending() const override;  // the first signal's number, 0 when none came
};

// "SIGTERM", "SIGINT", else "signal N".
std::string signal_name(int signo);

}  // namespace peftrun
