#include "runtime/train/training_backend.h"

#include <stdexcept>

namespace peftrun {

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
