#include "server/storage/allocator_tuning.h"

#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

namespace bonsai::storage {
namespace {

void SetUnlessInEnvironment(const char* variable, int option, int value) {
  if (std::getenv(variable) == nullptr) mallopt(option, value);
}

}  // namespace

// Figures from the 384 MiB bench job (bench/e2e_compress.py), first job of
// a fresh server, this VM, where a page fault costs several microseconds:
//  - Arenas: glibc gives each thread that meets contention an arena of its
//    own (up to 8 per core), and buffers below the mmap threshold stay in
//    those arenas after the job, beyond malloc_trim's reach. bench/soak.py
//    (8 clients, 1 min) left the idle server at 123-133 MiB with the default
//    and at 47 MiB with two arenas, at the same latency.
//  - Thresholds: by default a 1 MiB message buffer is mmapped until the
//    dynamic threshold has grown, and the heap's top is trimmed whenever 2x
//    that threshold is free, so the same pages are faulted in again and
//    again: 113k page faults and 5.6 s of server CPU per job. A fixed 4 MiB
//    mmap threshold and a 64 MiB trim threshold: 58k faults, 3.8 s. The job
//    still ends with malloc_trim(0), so an idle server returns to baseline.
void TuneAllocatorForStreaming() {
  SetUnlessInEnvironment("MALLOC_ARENA_MAX", M_ARENA_MAX, 2);
  SetUnlessInEnvironment("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, 4 << 20);
  SetUnlessInEnvironment("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, 64 << 20);
}

void ReleaseFreeMemory() { malloc_trim(0); }

// The remaining 58k faults were the first touches of the job's three
// tensor-sized buffers; with huge pages they are ~8k, and the job's server
// CPU falls from 3.8 s to 2.8 s.
void AdviseHugePages(void* data, size_t bytes) {
  constexpr size_t kWorthIt = 4 << 20;  // two huge pages at least
  if (data == nullptr || bytes < kWorthIt) return;
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) & ~(page - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(page - 1);
  if (end <= begin) return;
  // Advice only: EINVAL where THP is compiled out is as good as success.
  (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace bonsai::storage
