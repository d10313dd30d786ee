#include <cstring>
#include <stdexcept>
#include <string>

#include "comm/communicator.h"

namespace peftrun {
namespace {

// world = 1: a sum or maximum over one rank is the data itself, so nothing moves; it never waits
// for anyone, so the timeout never applies.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  const char* backend() const override { return "local"; }
  void all_reduce_sum(float*, std::size_t) override {}
  void all_reduce_sum(double*, std::size_t) override {}
  void all_reduce_max(double*, std::size_t) override {}
  void all_gather(const void* in, void* out, std::size_t bytes) override {
    if (in != out && bytes > 0) std::memmove(out, in, bytes);
  }
  // Checked like the MPI backend, so a wrong root fails in single-process tests too.
  void broadcast(void*, std::size_t, int root) override {
    if (root != 0) {
      throw std::invalid_argument("broadcast root " + std::to_string(root) +
                                  " is not a rank of a world of 1");
    }
  }
  void barrier() override {}
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

}  // namespace peftrun
