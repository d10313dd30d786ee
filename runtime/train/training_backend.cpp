#include "runtime/train/training_backend.h"

#include <stdexcept>

namespace peftrun {

BackendSetup backend_setup(const Config& config, const BaseWeights& base,
                           const AdapterLayout& layout, TrainState& state, Communicator* comm,
                           std::ostream* log) {
  BackendSetup s;
  s.config = &config;
  s.base = &base;
  s.layout = &layout;
  s.state = &state;
  s.comm = comm;
  s.max_batch = config.train.micro_batch_size;
  s.seq_len = config.data.seq_len;
  s.recompute_layers = config.runtime.gradient_checkpointing;
  s.log = log;
  return s;
}

std::unique_ptr<TrainingBackend> make_training_backend(const BackendChoice& choice,
                                                       const BackendSetup& setup) {
  if (!choice.cuda()) return make_cpu_training_backend(setup);
#if PEFTRUN_WITH_CUDA
  return make_cuda_training_backend(setup, choice.compute);
#else
  throw BackendUnavailable(
      "runtime.device: 'cuda', but this peftrun was built without the CUDA "
      "backend; use runtime.device: cpu or auto");
#endif
}

}  // namespace peftrun
