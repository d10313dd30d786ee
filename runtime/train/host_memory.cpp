#include "runtime/train/host_memory.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "runtime/model/arena_plan.h"

namespace peftrun {

namespace {

std::optional<std::string> read_text(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::optional<std::size_t> read_number(const char* path) {
  const std::optional<std::string> text = read_text(path);
  if (!text) return std::nullopt;
  return cgroup_limit_bytes(*text);
}

// The value of `key` in a memory.stat file ("key value" lines), 0 when absent.
std::size_t stat_value(const char* stat_path, const std::string& key) {
  const std::optional<std::string> text = read_text(stat_path);
  if (!text) return 0;
  std::istringstream in(*text);
  std::string name;
  unsigned long long value = 0;
  while (in >> name >> value) {
    if (name == key) return static_cast<std::size_t>(value);
  }
  return 0;
}

// Room under a cgroup limit, when the limit is finite: limit - usage, where usage leaves out the
// inactive page cache the kernel reclaims before it kills anything (as `docker stats` does).
std::optional<std::size_t> cgroup_room(const char* limit_path, const char* usage_path,
                                       const char* stat_path, const char* inactive_key) {
  const std::optional<std::size_t> limit = read_number(limit_path);
  if (!limit) return std::nullopt;
  std::size_t usage = read_number(usage_path).value_or(0);
  usage -= std::min(usage, stat_value(stat_path, inactive_key));
  return *limit > usage ? *limit - usage : 0;
}

}  // namespace

std::optional<std::size_t> meminfo_available_bytes(const std::string& meminfo_text) {
  std::istringstream in(meminfo_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    unsigned long long kib = 0;
    std::string unit;
    if (!(fields >> kib)) return std::nullopt;
    fields >> unit;
    return static_cast<std::size_t>(kib) * (unit == "kB" || unit.empty() ? 1024 : 1);
  }
  return std::nullopt;
}

std::optional<std::size_t> cgroup_limit_bytes(const std::string& limit_text) {
  std::istringstream in(limit_text);
  std::string word;
  if (!(in >> word) || word == "max") return std::nullopt;
  try {
    std::size_t used = 0;
    const unsigned long long v = std::stoull(word, &used);
    if (used != word.size()) return std::nullopt;
    // cgroup v1 writes "no limit" as a huge page-aligned number near 2^63.
    if (v >= (1ull << 62)) return std::nullopt;
    return static_cast<std::size_t>(v);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string host_memory_refusal(std::size_t need, std::optional<std::size_t> need_recomputed,
                                std::size_t available, int local_ranks, int micro_batch,
                                int seq_len) {
  const int sharing = std::max(local_ranks, 1);
  const std::size_t share = available / std::size_t(sharing);
  if (need <= share) return "";
  std::string message =
      "runtime.device: cpu: the model's buffers for train.micro_batch_size " +
      std::to_string(micro_batch) + " x data.seq_len " + std::to_string(seq_len) + " need " +
      format_bytes(need) + ", but only " + format_bytes(share) + " of host memory is available" +
      (sharing > 1 ? " to each of the " + std::to_string(sharing) + " ranks on this machine (" +
                         format_bytes(available) + " in all)"
                   : std::string()) +
      "; expected ";
  if (need_recomputed) {
    message += "runtime.gradient_checkpointing: true (needs " + format_bytes(*need_recomputed) +
               (*need_recomputed <= share ? ")" : ", still too much)") + ", or ";
  }
  return message + "a smaller micro-batch or sequence length" +
         (sharing > 1 ? ", or fewer ranks per machine" : "");
}

std::optional<std::size_t> host_memory_available() {
  std::optional<std::size_t> room;
  const auto take = [&room](std::optional<std::size_t> v) {
    if (v) room = room ? std::min(*room, *v) : *v;
  };
  if (const std::optional<std::string> meminfo = read_text("/proc/meminfo")) {
    take(meminfo_available_bytes(*meminfo));
  }
  take(cgroup_room("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current",
                   "/sys/fs/cgroup/memory.stat", "inactive_file"));
  take(cgroup_room("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                   "/sys/fs/cgroup/memory/memory.usage_in_bytes",
                   "/sys/fs/cgroup/memory/memory.stat", "total_inactive_file"));
  return room;
}

}  // namespace peftrun
