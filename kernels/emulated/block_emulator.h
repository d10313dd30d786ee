// Runs CUDA kernel functors (kernels/*_blocks.h) on the CPU: every thread of a block is a fiber
// (fiber_switch.h) and sync() switches back to a scheduler, which resumes the threads once all of
// them have arrived. This is the launcher the CPU test suite hands to the ops' shared launch code
// in place of kernels/cuda_launch.cuh's CudaLauncher, so the very kernel bodies the GPU runs are
// checked here against their CPU twins.
//
// What it catches beyond wrong results:
//  - out-of-bounds indices into any Span (global or shared memory), named with the launch;
//  - barrier divergence (some threads leave the kernel while others wait at sync());
//  - missing barriers, by running the threads of each phase in order, reversed or shuffled:
//    a read that races with another thread's write sees a different value under another order;
//  - reads of shared memory never written (it is filled with 0xFF = NaN before every block);
//  - launch geometries CUDA would refuse (threads, grid, shared memory above sm_80's limit).
// Not thread-safe: one emulated launch at a time per OS thread.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/block_context.h"
#include "kernels/emulated/fiber_switch.h"

namespace peftrun::emu {

#if PEFTRUN_CUDA_EMULATION
// Pages of the emulated device's address range for the blocks' shared memory of one OS thread
// (kernels/emulated/cuda_memory_emulated.cpp); unlike device_malloc, not counted as a device
// allocation: on a GPU shared memory is not allocated at all.
unsigned char* allocate_shared_memory(std::size_t bytes);
#endif

enum class Schedule { kInOrder, kReversed, kShuffled };

inline const char* schedule_name(Schedule s) {
  return s == Schedule::kInOrder ? "in-order" : s == Schedule::kReversed ? "reversed" : "shuffled";
}

// The threads of one block as fibers.
class BlockEmulator {
 public:
  BlockEmulator(int threads, Schedule schedule, std::uint64_t seed)
      : threads_(threads), schedule_(schedule), seed_(seed), fibers_(threads) {
    page_ = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    for (Fiber& f : fibers_) {
      // One guard page below each stack: an overflow faults instead of corrupting a neighbour.
      void* mem = mmap(nullptr, kStackBytes + page_, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mem == MAP_FAILED) throw std::runtime_error("block emulator: cannot map a fiber stack");
      mprotect(mem, page_, PROT_NONE);
      f.stack = static_cast<char*>(mem);
    }
  }
  ~BlockEmulator() {
    for (Fiber& f : fibers_) munmap(f.stack, kStackBytes + page_);
  }
  BlockEmulator(const BlockEmulator&) = delete;
  BlockEmulator& operator=(const BlockEmulator&) = delete;

  // Runs body(thread) for every thread of one block, interleaved at barriers. Throws on barrier
  // divergence.
  void run_block(const std::function<void(int)>& body) {
    body_ = &body;
    failure_ = nullptr;
    for (Fiber& f : fibers_) {
      fiber_prepare(f.context, f.stack + page_, kStackBytes, &BlockEmulator::trampoline);
      f.state = State::kReady;
    }
    std::vector<int> order(static_cast<std::size_t>(threads_));
    for (int phase = 0;; ++phase) {
      std::iota(order.begin(), order.end(), 0);
      if (schedule_ == Schedule::kReversed) std::reverse(order.begin(), order.end());
      if (schedule_ == Schedule::kShuffled) {
        std::mt19937_64 rng(seed_ * 1000003u + static_cast<std::uint64_t>(phase));
        std::shuffle(order.begin(), order.end(), rng);
      }
      for (const int t : order) {
        running_ = t;
        current() = this;
        fibers_[static_cast<std::size_t>(t)].state = State::kRunning;
        fiber_switch(scheduler_, fibers_[static_cast<std::size_t>(t)].context);
        if (failure_) std::rethrow_exception(failure_);
      }
      const auto done = std::count_if(fibers_.begin(), fibers_.end(),
                                      [](const Fiber& f) { return f.state == State::kDone; });
      if (done == threads_) return;
      if (done > 0) {
        throw std::runtime_error("barrier divergence: " + std::to_string(done) + " of " +
                                 std::to_string(threads_) +
                                 " threads left the kernel while the others wait at barrier " +
                                 std::to_string(phase + 1));
      }
    }
  }

  // Called by the running fiber at sync().
  void barrier() {
    Fiber& f = fibers_[static_cast<std::size_t>(running_)];
    f.state = State::kAtBarrier;
    fiber_switch(f.context, scheduler_);
  }

 private:
  enum class State { kReady, kRunning, kAtBarrier, kDone };
  struct Fiber {
    FiberContext context;
    char* stack = nullptr;
    State state = State::kReady;
  };
  static constexpr std::size_t kStackBytes = 256 * 1024;

  static BlockEmulator*& current() {
    static thread_local BlockEmulator* emulator = nullptr;
    return emulator;
  }
  // A fiber's first frame: runs its thread, then switches to the scheduler for good (it must
  // not return: nothing is below it on its stack). An exception from the thread is handed to
  // the scheduler, since it cannot unwind past this frame.
  static void trampoline() {
    BlockEmulator* e = current();
    const int t = e->running_;
    try {
      (*e->body_)(t);
    } catch (...) {
      e->failure_ = std::current_exception();
    }
    Fiber& f = e->fibers_[static_cast<std::size_t>(t)];
    f.state = State::kDone;
    fiber_switch(f.context, e->scheduler_);
    __builtin_unreachable();
  }

  int threads_;
  Schedule schedule_;
  std::uint64_t seed_;
  std::size_t page_ = 4096;
  std::vector<Fiber> fibers_;
  FiberContext scheduler_;
  const std::function<void(int)>* body_ = nullptr;
  std::exception_ptr failure_;
  int running_ = 0;
};

// One emulator per (threads, schedule, seed) and OS thread, kept for the process: mapping a
// block's fiber stacks costs three system calls per thread, too much to pay on every launch of
// a training step (kernels/emulated/). run_block re-creates the fibers for every block.
inline BlockEmulator& cached_emulator(int threads, Schedule schedule, std::uint64_t seed) {
  struct Entry {
    int threads;
    Schedule schedule;
    std::uint64_t seed;
    std::unique_ptr<BlockEmulator> emulator;
  };
  static thread_local std::vector<Entry> cache;
  for (Entry& e : cache) {
    if (e.threads == threads && e.schedule == schedule && e.seed == seed) return *e.emulator;
  }
  cache.push_back(
      {threads, schedule, seed, std::make_unique<BlockEmulator>(threads, schedule, seed)});
  return *cache.back().emulator;
}

// The Ctx of an emulated thread (see kernels/block_context.h).
class EmulatedBlock {
 public:
  EmulatedBlock(BlockEmulator* emulator, int thread, const LaunchGeometry& g, int bx, int by,
                int bz)
      : emulator_(emulator), thread_(thread), g_(g), bx_(bx), by_(by), bz_(bz) {}
  int thread() const { return thread_; }
  int threads() const { return g_.threads; }
  int block_x() const { return bx_; }
  int block_y() const { return by_; }
  int block_z() const { return bz_; }
  int grid_x() const { return g_.grid_x; }
  void sync() const { emulator_->barrier(); }

 private:
  BlockEmulator* emulator_;
  int thread_;
  LaunchGeometry g_;
  int bx_, by_, bz_;
};

// Same interface as cuda::CudaLauncher: launcher(name, geometry, kernel).
class EmulatedLauncher {
 public:
  explicit EmulatedLauncher(Schedule schedule = Schedule::kInOrder, std::uint64_t seed = 1)
      : schedule_(schedule), seed_(seed) {}

  template <class K>
  void operator()(const char* name, const LaunchGeometry& g, const K& kernel) const {
    if (g.empty()) return;
    if (g.threads > K::kMaxThreads || g.threads > 1024 || g.grid_y > kMaxGridYZ ||
        g.grid_z > kMaxGridYZ) {
      throw std::invalid_argument(std::string(name) + ": launch geometry outside CUDA's limits");
    }
    if (g.smem_bytes > kMaxSharedBytesSm80) {
      throw std::invalid_argument(std::string(name) + " needs " + std::to_string(g.smem_bytes) +
                                  " bytes of shared memory per block; sm_80 allows " +
                                  std::to_string(kMaxSharedBytesSm80));
    }
    BlockEmulator& emulator = cached_emulator(g.threads, schedule_, seed_);
    // The block's shared memory starts 128-byte aligned, as on the device (cuda_launch_device.cuh),
    // so alignment rules (tensor_core.h) are checked on real addresses.
    const Span<unsigned char> smem = shared_storage(g.smem_bytes + 2 * kGuardBytes + kBaseAlign);
    const std::uintptr_t raw = reinterpret_cast<std::uintptr_t>(smem.ptr) + kGuardBytes;
    unsigned char* base = smem.ptr + kGuardBytes + (kBaseAlign - raw % kBaseAlign) % kBaseAlign;
    g_out_of_bounds.clear();
    for (int bz = 0; bz < g.grid_z; ++bz) {
      for (int by = 0; by < g.grid_y; ++by) {
        for (int bx = 0; bx < g.grid_x; ++bx) {
          std::memset(smem.ptr, 0xFF, smem.size);
          const std::function<void(int)> body = [&](int t) {
            kernel(EmulatedBlock(&emulator, t, g, bx, by, bz),
                   Span<unsigned char>{base, g.smem_bytes});
          };
          const std::string where = std::string(name) + " block (" + std::to_string(bx) + "," +
                                    std::to_string(by) + "," + std::to_string(bz) + ")";
          try {
            emulator.run_block(body);
          } catch (const std::runtime_error& e) {
            throw std::runtime_error(where + ": " + e.what());
          }
          if (!g_out_of_bounds.empty()) throw std::runtime_error(where + ": " + g_out_of_bounds);
          for (std::size_t i = 0; i < kGuardBytes; ++i) {
            if (base[-1 - static_cast<std::ptrdiff_t>(i)] != 0xFF ||
                base[g.smem_bytes + i] != 0xFF) {
              throw std::runtime_error(where + ": wrote outside its shared memory");
            }
          }
        }
      }
    }
  }

 private:
  static constexpr std::size_t kGuardBytes = 64;
  static constexpr std::size_t kBaseAlign = 128;

  // Room for a block's shared memory and its guards, kept per OS thread. On the emulated device
  // (kernels/emulated/) it is device memory, so every access of an emulated kernel is checked
  // against the one device address range (block_context.h's Span).
  static Span<unsigned char> shared_storage(std::size_t bytes) {
    static constexpr std::size_t kMost = kMaxSharedBytesSm80 + 2 * kGuardBytes + kBaseAlign;
#if PEFTRUN_CUDA_EMULATION
    static thread_local unsigned char* storage = allocate_shared_memory(kMost);
#else
    static thread_local std::vector<unsigned char> buffer(kMost);
    unsigned char* storage = buffer.data();
#endif
    return Span<unsigned char>{storage, bytes};
  }
  Schedule schedule_;
  std::uint64_t seed_;
};

}  // namespace peftrun::emu
