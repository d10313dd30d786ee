#include "runtime/model/arena_plan.h"

#include <cstdio>

namespace peftrun {

ArenaSlot ArenaPlan::add(std::string name, std::size_t bytes) {
  if (bytes == 0) return {};
  const std::size_t offset = (total_ + kAlignment - 1) / kAlignment * kAlignment;
  const ArenaSlot slot{offset, bytes};
  total_ = offset + bytes;
  regions_.push_back({std::move(name), slot});
  return slot;
}

std::size_t ArenaPlan::group_bytes(const std::string& group) const {
  std::size_t sum = 0;
  for (const Region& r : regions_) {
    if (r.name.compare(0, group.size() + 1, group + "/") == 0) sum += r.slot.bytes;
  }
  return sum;
}

std::string ArenaPlan::summary() const {
  std::vector<std::string> groups;
  for (const Region& r : regions_) {
    const std::string g = r.name.substr(0, r.name.find('/'));
    bool seen = false;
    for (const std::string& s : groups) seen = seen || s == g;
    if (!seen) groups.push_back(g);
  }
  std::string out;
  for (const std::string& g : groups) {
    out += (out.empty() ? "" : ", ") + g + " " + format_bytes(group_bytes(g));
  }
  return out;
}

std::string format_bytes(std::size_t bytes) {
  char buf[32];
  if (bytes >= (std::size_t(1) << 30)) {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", double(bytes) / double(std::size_t(1) << 30));
  } else if (bytes >= (std::size_t(1) << 20)) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", double(bytes) / double(std::size_t(1) << 20));
  } else if (bytes >= 1024) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", double(bytes) / 1024.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%zu B", bytes);
  }
  return buf;
}

}  // namespace peftrun
