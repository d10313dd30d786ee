// Where this process sits in the job, read from the launcher's environment before MPI starts
// (the GPU must be chosen from the local rank before MPI_Init for CUDA-aware MPI), and the
// Communicator that goes with it.
//
// Wiring in main():
//   const WorldInfo world = discover_world();               // may throw on a malformed variable
//   MpiRuntime mpi(&argc, &argv, world.launched_by_mpi);    // MPI only under mpirun/srun
//   auto comm = make_world_communicator(world, cfg.comm.timeout_s);
//   ...
//   return mpi.finish(exit_code, /*failure_agreed=*/...);
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace peftrun {

struct WorldInfo {
  int rank = 0;
  int world_size = 1;  // 0: an MPI launcher started us but did not say how many (PMIx alone)
  int local_rank = 0;  // index among the ranks on this node: picks the GPU
  int local_size = 1;  // ranks on this node; 0 when the launcher does not say
  bool launched_by_mpi = false;  // MPI must be initialised (MpiRuntime)
  std::string source = "none";   // the variables the numbers came from, for messages
};

// Returns the value of an environment variable or nullptr (tests pass a fake environment).
using EnvLookup = std::function<const char*(const char*)>;

// Reads, in order of preference: Open MPI (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE),
// MPICH/Hydra and Slurm's PMI2 (PMI_RANK/PMI_SIZE, MPI_LOCALRANKID/MPI_LOCALNRANKS), PMIx
// (PMIX_RANK, with the size and local rank from an srun step's SLURM_STEP_NUM_TASKS and
// SLURM_LOCALID when present). None of these: world = 1, no MPI. Slurm variables alone never
// make a world: an sbatch script sets SLURM_NTASKS for the allocation while running one process.
// Throws std::runtime_error naming the variable when one is not a number or out of range.
WorldInfo discover_world(const EnvLookup& env);
WorldInfo discover_world();  // the process environment

// The Communicator for `world` (comm/communicator.h make_communicator): MPI when MPI is
// initialised, Local for a single process; a clear std::runtime_error when more than one rank
// was launched but this build has no MPI. With `device_buffers` (GPU ranks), NCCL over that
// communicator on CUDA device world.local_rank.
std::unique_ptr<Communicator> make_world_communicator(
    const WorldInfo& world, double timeout_s = Communicator::kDefaultTimeoutS,
    bool device_buffers = false);

}  // namespace peftrun
