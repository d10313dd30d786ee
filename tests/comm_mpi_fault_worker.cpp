// Ranks that fail on purpose, launched under mpirun by comm_mpi_fault_test:
//   comm_mpi_fault_worker SCENARIO TIMEOUT_S PID_DIR
// Every rank writes PID_DIR/rank<R>.pid (so the driver can check that none survives), joins one
// healthy all-reduce (so every rank is up and connected), then:
//   stuck      rank 2 stops communicating (sleeps); the others all-reduce 77824 floats
//   killed     rank 3 kills itself with SIGKILL; the others all-reduce
//   agreed     rank 1 reports a failure through agree(); every rank exits 2 after MPI_Finalize
//   unagreed   rank 1 fails alone and leaves through MpiRuntime::finish(5); the others wait in a
//              barrier whose timeout is far away, so only the abort can end them in time
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "comm/mpi_communicator.h"
#include "comm/mpi_runtime.h"

int main(int argc, char** argv) {
  peftrun::MpiRuntime mpi(&argc, &argv, /*use_mpi=*/true);
  if (argc != 4) {
    std::fprintf(stderr, "usage: comm_mpi_fault_worker SCENARIO TIMEOUT_S PID_DIR\n");
    return mpi.finish(64);
  }
  const std::string scenario = argv[1];
  peftrun::MpiCommunicator comm(std::atof(argv[2]));
  const int rank = comm.rank();
  std::ofstream(std::string(argv[3]) + "/rank" + std::to_string(rank) + ".pid") << ::getpid();

  std::vector<float> grads(77824, 1.0f);
  comm.all_reduce_sum(grads.data(), grads.size());

  if (scenario == "stuck") {
    // Bounded, so a broken timeout cannot leave a process behind forever.
    if (rank == 2) std::this_thread::sleep_for(std::chrono::seconds(120));
    comm.all_reduce_sum(grads.data(), grads.size());
  } else if (scenario == "killed") {
    if (rank == 3) ::raise(SIGKILL);
    comm.all_reduce_sum(grads.data(), grads.size());
  } else if (scenario == "agreed") {
    const peftrun::Agreement a =
        comm.agree(rank != 1, rank == 1 ? "cannot read data file /data/missing.bin" : "data ok");
    if (!a.ok) {
      std::fprintf(stderr, "peftrun: rank %d: stopping: %s\n", rank, a.describe().c_str());
      return mpi.finish(2, /*failure_agreed=*/true);
    }
  } else if (scenario == "unagreed") {
    if (rank == 1) {
      std::fprintf(stderr, "peftrun: rank 1: error: simulated local failure\n");
      return mpi.finish(5);
    }
    comm.barrier();
  } else {
    std::fprintf(stderr, "comm_mpi_fault_worker: unknown scenario '%s'\n", scenario.c_str());
    return mpi.finish(64);
  }
  return mpi.finish(0);
}
