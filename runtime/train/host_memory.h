// How much host memory this process may still use, read before the CPU model allocates its
// buffers, so that a run too large for the machine is refused with the numbers instead of
// being killed by the kernel's OOM killer half-way through allocating them.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace peftrun {

// The smaller of /proc/meminfo's MemAvailable and the room left under this process's cgroup
// memory limit (v2 memory.max - memory.current, or v1 limit_in_bytes - usage_in_bytes, each
// usage less its inactive page cache), in bytes; nullopt when neither can be read (not Linux).
// Several ranks on one machine each see the whole of it.
std::optional<std::size_t> host_memory_available();

// Whether a CPU model fits: "" when `need` bytes fit in this rank's share of `available`
// (available / local_ranks: ranks on one machine share its memory), else the refusal naming
// micro_batch_size x seq_len, both sizes and, when given (the run does not checkpoint yet),
// what gradient checkpointing would need.
std::string host_memory_refusal(std::size_t need, std::optional<std::size_t> need_recomputed,
                                std::size_t available, int local_ranks, int micro_batch,
                                int seq_len);

// Parsers of the files above, exposed for tests. nullopt: no such line / no finite limit.
std::optional<std::size_t> meminfo_available_bytes(const std::string& meminfo_text);
std::optional<std::size_t> cgroup_limit_bytes(const std::string& limit_text);  // "max" = none

}  // namespace peftrun
