// Defaults for the byte budgets from what the machine (or the container)
// really has, so that a server started without flags never promises more
// memory or disk than exists.
#ifndef BONSAI_SERVER_STORAGE_SYSTEM_LIMITS_H_
#define BONSAI_SERVER_STORAGE_SYSTEM_LIMITS_H_

#include <cstdint>
#include <string>

namespace bonsai::storage {

// The memory this process may use: the tightest limit of its own cgroup and
// its ancestors (v2 memory.max or v1 memory.limit_in_bytes, found through
// /proc/self/cgroup) when there is one, else the machine's RAM.
uint64_t AvailableMemoryBytes();

// Working memory for jobs by default: 7/8 of AvailableMemoryBytes() less
// 128 MiB for the server itself (gRPC, buffers, page tables).
uint64_t DefaultMemoryBudget();

// Spool disk by default: 9/10 of the free space of `dir` now; 0 if unknown.
uint64_t DefaultSpoolBudget(const std::string& dir);

}  // namespace bonsai::storage

#endif  // BONSAI_SERVER_STORAGE_SYSTEM_LIMITS_H_
