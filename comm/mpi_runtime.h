// MPI's lifetime in one process, and the job-wide abort. Safe to include in any build: without
// MPI (PEFTRUN_WITH_MPI unset) everything here is a no-op or exits this process only.
#pragma once

namespace peftrun {

class MpiRuntime {
 public:
  // Initialises MPI (MPI_Init_thread, MPI_THREAD_SERIALIZED requested so a later communication
  // thread may make the calls) only when `use_mpi`: pass WorldInfo::launched_by_mpi
  // (launch/world.h), so a plain `peftrun train.yaml` never touches MPI. Does nothing when MPI is
  // already initialised (it then leaves finalising to whoever initialised it) or in a build
  // without MPI.
  MpiRuntime(int* argc, char*** argv, bool use_mpi);
  // Finalises MPI if finish() was not called. If an exception is propagating, aborts the job
  // instead: MPI_Finalize would wait for peers that may be blocked in a collective.
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;

  // True when this object initialised MPI and has not finalised it yet.
  bool active() const { return owns_ && !finished_; }

  // Call on every way out of main with its exit code; returns it.
  // - 0, or a failure that every rank knows about (`failure_agreed`, reached through
  //   Communicator::agree, so every rank is on its way out): MPI_Finalize, normal exit.
  // - any other non-zero code: this rank failed alone and its peers may be waiting for it in a
  //   collective, so MPI_Abort(exit_code) makes the launcher end them now (does not return).
  int finish(int exit_code, bool failure_agreed = false);

 private:
  bool owns_ = false;
  bool finished_ = false;
  int uncaught_at_start_ = 0;
};

// True between MPI_Init and MPI_Finalize (whoever called them); false in a build without MPI.
bool mpi_runtime_active();

// Ends the whole job with `exit_code`: MPI_Abort when MPI is active (the launcher kills every
// rank), otherwise std::_Exit of this process. Flushes stdout and stderr first.
[[noreturn]] void abort_job(int exit_code);

}  // namespace peftrun
