#include "comm/mpi_runtime.h"

#include <cstdio>
#include <cstdlib>
#include <exception>

#if PEFTRUN_WITH_MPI
#include <mpi.h>
#endif

namespace peftrun {

MpiRuntime::MpiRuntime(int* argc, char*** argv, bool use_mpi)
    : uncaught_at_start_(std::uncaught_exceptions()) {
#if PEFTRUN_WITH_MPI
  if (!use_mpi || mpi_runtime_active()) return;
  int provided = 0;
  // The default error handler (MPI_ERRORS_ARE_FATAL) stays: a failed MPI call ends the job
  // rather than leaving peers waiting.
  MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided);
  owns_ = true;
#else
  (void)argc;
  (void)argv;
  (void)use_mpi;
#endif
}

MpiRuntime::~MpiRuntime() {
  if (!active()) return;
  if (std::uncaught_exceptions() > uncaught_at_start_) {
    std::fputs("peftrun: leaving main with an exception; aborting the MPI job\n", stderr);
    abort_job(1);
  }
  finish(0);
}

int MpiRuntime::finish(int exit_code, bool failure_agreed) {
  if (!active()) return exit_code;
  if (exit_code != 0 && !failure_agreed) abort_job(exit_code);
  finished_ = true;
#if PEFTRUN_WITH_MPI
  std::fflush(nullptr);
  MPI_Finalize();
#endif
  return exit_code;
}

bool mpi_runtime_active() {
#if PEFTRUN_WITH_MPI
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
#else
  return false;
#endif
}

void abort_job(int exit_code) {
  std::fflush(nullptr);
#if PEFTRUN_WITH_MPI
  if (mpi_runtime_active()) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
  // MPI_Abort should not return; if it does (or there is no MPI), at least this rank ends.
  std::_Exit(exit_code);
}

}  // namespace peftrun
