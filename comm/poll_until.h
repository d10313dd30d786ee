// The one polling loop behind every deadline in comm/: MPI requests (MPI_Test) and NCCL
// operations (a CUDA event plus ncclCommGetAsyncError) are both "ask until done, give up at the
// deadline", since neither library can wait with a timeout itself.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace peftrun {

using CommClock = std::chrono::steady_clock;

// Polling policy. For the first kPollSpinFor the rank polls continuously, yielding between
// polls: small collectives finish within it, and a nap that early would cost the whole call at
// least the kernel's timer slack (~50 us) per round. The yield lets ranks oversubscribed on few
// cores hand the CPU to the peer they wait for. After that the rank naps, doubling up to
// kPollMaxNap: short enough that the rounds of a large MPI all-reduce keep moving (Open MPI
// advances a non-blocking collective only inside MPI calls), long enough that a rank waiting
// minutes for a slow peer costs no CPU.
inline constexpr auto kPollSpinFor = std::chrono::microseconds(1000);
inline constexpr auto kPollFirstNap = std::chrono::microseconds(5);
inline constexpr auto kPollMaxNap = std::chrono::microseconds(200);

// Calls done() until it returns true. Once more than timeout_s seconds have passed since
// `start` (the call's start, which may be earlier than this wait), calls on_deadline(waited_s),
// which must not return (it reports and ends the job).
template <class Done, class OnDeadline>
void poll_until(CommClock::time_point start, double timeout_s, Done&& done,
                OnDeadline&& on_deadline) {
  const auto spin_until = CommClock::now() + kPollSpinFor;
  auto nap = kPollFirstNap;
  while (!done()) {
    const auto now = CommClock::now();
    if (now < spin_until) {
      std::this_thread::yield();
      continue;
    }
    const double waited = std::chrono::duration<double>(now - start).count();
    if (waited > timeout_s) on_deadline(waited);
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, kPollMaxNap);
  }
}

}  // namespace peftrun
