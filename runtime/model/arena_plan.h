// Device memory planned once, at start-up (DESIGN §3: "no allocation inside the step loop").
// Every buffer of the device model and of the trainer's flat state is a named region of one
// allocation; the plan is plain host code, so sizes, alignment and the absence of overlap are
// unit-tested on machines without a GPU (tests/arena_plan_test.cpp).
//
// Region names are "group/what" (weights/, activations/, backward/, workspace/, batch/, state/):
// the log's memory line sums them by group.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

namespace peftrun {

// Where one buffer sits in an arena: a byte offset and a size. An empty slot (0 bytes) is a
// buffer that this configuration does not need; it resolves to nullptr.
struct ArenaSlot {
  std::size_t offset = 0;
  std::size_t bytes = 0;
  bool empty() const { return bytes == 0; }
};

class ArenaPlan {
 public:
  // cuBLASLt's preferred alignment, and more than any vector load needs; also keeps every
  // region's pointer alignment independent of what precedes it, so equal configs give equal
  // cuBLASLt plan keys.
  static constexpr std::size_t kAlignment = 256;

  struct Region {
    std::string name;
    ArenaSlot slot;
  };

  // Appends a region of `bytes` at the next aligned offset (nothing for 0 bytes).
  ArenaSlot add(std::string name, std::size_t bytes);
  // n elements of `elem_bytes` each.
  ArenaSlot add(std::string name, std::size_t n, std::size_t elem_bytes) {
    return add(std::move(name), n * elem_bytes);
  }

  std::size_t total_bytes() const { return total_; }
  const std::vector<Region>& regions() const { return regions_; }
  // Bytes of the regions whose name starts with `group` + "/".
  std::size_t group_bytes(const std::string& group) const;
  // "weights 1.2 MiB, activations 3.4 MiB, ..." in order of first appearance.
  std::string summary() const;

 private:
  std::vector<Region> regions_;
  std::size_t total_ = 0;
};

// "12.3 MiB" / "512 KiB" / "100 B".
std::string format_bytes(std::size_t bytes);

}  // namespace peftrun
