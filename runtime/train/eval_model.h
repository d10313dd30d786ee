// What held-out evaluation asks of a model, whichever backend holds it and its parameters.
#pragma once

#include "runtime/model/transformer.h"

namespace peftrun {

class EvalModel {
 public:
  virtual ~EvalModel() = default;
  // Forward only, no dropout, with the model's current parameters. Returns the sum of token
  // losses; `logits_out` (host, optional) receives the logits [batch * seq_len, vocab].
  virtual double eval_micro_batch(const Batch& b, float* logits_out) = 0;
  virtual int vocab_size() const = 0;
};

}  // namespace peftrun
