#include "launch/world.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace peftrun {
namespace {

// Parses a non-negative decimal variable; -1 when absent. Rejects junk rather than guessing:
// a wrong rank would silently train on the wrong shard.
int read_int(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (v == nullptr) return -1;
  errno = 0;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || errno != 0 || x < 0 || x > 1000000) {
    throw std::runtime_error(std::string("environment variable ") + name + "='" + v +
                             "' is not a valid rank or size");
  }
  return static_cast<int>(x);
}

void require_rank_below(int rank, int size, const char* rank_var, const char* size_var) {
  if (size == 0 || (size > 0 && rank >= size)) {
    throw std::runtime_error(std::string(rank_var) + "=" + std::to_string(rank) + " with " +
                             size_var + "=" + std::to_string(size) +
                             " is not a rank of that world");
  }
}

}  // namespace

WorldInfo discover_world(const EnvLookup& env) {
  WorldInfo w;
  if (const int size = read_int(env, "OMPI_COMM_WORLD_SIZE"); size >= 0) {
    w.world_size = size;
    w.rank = std::max(0, read_int(env, "OMPI_COMM_WORLD_RANK"));
    require_rank_below(w.rank, w.world_size, "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE");
    w.local_rank = read_int(env, "OMPI_COMM_WORLD_LOCAL_RANK");
    w.local_size = read_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE");
    w.source = "OMPI_COMM_WORLD_*";
  } else if (const int pmi_size = read_int(env, "PMI_SIZE"); pmi_size >= 0) {
    w.world_size = pmi_size;
    w.rank = std::max(0, read_int(env, "PMI_RANK"));
    require_rank_below(w.rank, w.world_size, "PMI_RANK", "PMI_SIZE");
    w.local_rank = read_int(env, "MPI_LOCALRANKID");
    w.local_size = read_int(env, "MPI_LOCALNRANKS");
    w.source = "PMI_*";
  } else if (const int pmix_rank = read_int(env, "PMIX_RANK"); pmix_rank >= 0) {
    // PMIx exports no size; inside an srun step Slurm does.
    w.rank = pmix_rank;
    w.world_size = std::max(0, read_int(env, "SLURM_STEP_NUM_TASKS"));
    if (w.world_size > 0) {
      require_rank_below(w.rank, w.world_size, "PMIX_RANK", "SLURM_STEP_NUM_TASKS");
    }
    w.local_rank = read_int(env, "SLURM_LOCALID");
    w.local_size = -1;
    w.source = w.world_size > 0 ? "PMIX_RANK + SLURM_STEP_NUM_TASKS" : "PMIX_RANK";
  } else {
    return w;  // a single process: world 1, no MPI
  }
  w.launched_by_mpi = true;
  if (w.local_rank < 0) w.local_rank = std::max(0, read_int(env, "SLURM_LOCALID"));
  if (w.local_size < 0) w.local_size = 0;
  return w;
}

WorldInfo discover_world() {
  return discover_world([](const char* name) -> const char* { return std::getenv(name); });
}

std::unique_ptr<Communicator> make_world_communicator(const WorldInfo& world, double timeout_s,
                                                      bool device_buffers) {
  CommRequest request;
  request.world_size = world.world_size;
  request.rank = world.rank;
  request.origin = world.source;
  request.timeout_s = timeout_s;
  request.local_rank = world.local_rank;
  request.device_buffers = device_buffers;
  return make_communicator(request);
}

}  // namespace peftrun
