// A fixed pool of worker threads that sleep on a condition variable between jobs. A job is one
// parallel_for: the caller publishes (fn, n, parts), bumps the generation, runs part 0 itself
// and waits until every worker has finished its part.
#include "kernels/parallel.h"

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace peftrun::cpu {
namespace {

void pool_after_fork();

class Pool {
 public:
  Pool() {
    // A forked child has only the forking thread: forget the workers (their std::thread objects
    // must not be joined or destroyed there) and run inline from then on.
    pthread_atfork(nullptr, nullptr, [] { pool_after_fork(); });
  }
  ~Pool() { resize(1); }

  void forget_workers_after_fork() {
    workers_.release();  // deliberately leaked: the threads do not exist in this process
    workers_ = std::make_unique<std::vector<std::thread>>();
    threads_ = 1;
  }

  int threads() const { return threads_; }

  // Stops the current workers and starts threads - 1 new ones.
  void resize(int threads) {
    std::lock_guard<std::mutex> dispatch(dispatch_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : *workers_) w.join();
    workers_->clear();
    stop_ = false;
    threads_ = std::max(1, threads);
    for (int i = 1; i < threads_; ++i)
      workers_->emplace_back([this, i, g = generation_] { work(i, g); });
  }

  void run(std::size_t n, std::size_t min_part,
           const std::function<void(std::size_t, std::size_t)>& fn) {
    std::unique_lock<std::mutex> dispatch(dispatch_, std::try_to_lock);
    const std::size_t max_parts = std::max<std::size_t>(1, n / std::max<std::size_t>(1, min_part));
    const int parts = static_cast<int>(std::min<std::size_t>(max_parts, std::size_t(threads_)));
    if (parts <= 1 || !dispatch.owns_lock()) {
      fn(0, n);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = &fn;
      n_ = n;
      parts_ = parts;
      pending_ = parts - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0, part_end(0));
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    fn_ = nullptr;
  }

 private:
  std::size_t part_end(int part) const { return n_ * std::size_t(part + 1) / std::size_t(parts_); }

  // `seen`: the generation when the worker was made; only later jobs are its to run.
  void work(int index, std::uint64_t seen) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      if (index >= parts_) continue;  // a small job: this worker has no part
      const auto* fn = fn_;
      const std::size_t begin = n_ * std::size_t(index) / std::size_t(parts_),
                        end = part_end(index);
      lock.unlock();
      (*fn)(begin, end);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex dispatch_;  // one job at a time
  std::mutex mutex_;     // guards everything below
  std::condition_variable wake_, done_;
  std::unique_ptr<std::vector<std::thread>> workers_ = std::make_unique<std::vector<std::thread>>();
  const std::function<void(std::size_t, std::size_t)>* fn_ = nullptr;
  std::size_t n_ = 0;
  int parts_ = 1, pending_ = 0, threads_ = 1;
  std::uint64_t generation_ = 0;
  bool stop_ = false;
};

Pool& pool() {
  static Pool p;
  return p;
}

void pool_after_fork() {
  pool().forget_workers_after_fork();
}

}  // namespace

void set_kernel_threads(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (threads != pool().threads()) pool().resize(threads);
}

int kernel_threads() {
  return pool().threads();
}

void parallel_for(std::size_t n, std::size_t min_part,
                  const std::function<void(std::size_t, std::size_t)>& fn) {
  if (n == 0) return;
  pool().run(n, min_part, fn);
}

}  // namespace peftrun::cpu
