#ifndef BONSAI_STORAGE_ALLOCATOR_TUNING_H_
#define BONSAI_STORAGE_ALLOCATOR_TUNING_H_

#include <cstddef>

namespace bonsai::storage {

// Sets glibc's malloc for a process that streams gigabytes in 1 MiB
// messages and works on tensors of tens of MiB; see the .cc for the figures.
// Any MALLOC_*_ environment variable the operator set still wins.
void TuneAllocatorForStreaming();

// Gives free heap pages back to the kernel (malloc_trim): called when a job's
// buffers have been freed, so that an idle server returns to its baseline
// rather than keeping its peak (the trim threshold above keeps up to 64 MiB
// per arena otherwise).
void ReleaseFreeMemory();

// Asks the kernel to back [data, data + bytes) with transparent huge pages
// when it is big enough to matter; call it before the memory is first
// touched. A no-op where THP is off ("never") or the range is small.
void AdviseHugePages(void* data, size_t bytes);

// Resizes a contiguous byte or float buffer that is about to be overwritten
// whole (a tensor read, a decode target), so that the pages its first touch
// faults in are huge pages: a 64 MiB tensor costs 32 faults instead of
// 16384. `buffer` is a std::vector or std::string; its capacity is kept, so
// reusing one buffer for many tensors faults each page once.
template <typename Buffer>
void ResizeForOverwrite(Buffer& buffer, size_t count) {
  if (count > buffer.capacity()) {
    Buffer().swap(buffer);  // the old contents are not needed: no copy
    buffer.reserve(count);  // allocated, not yet touched
    AdviseHugePages(buffer.data(), buffer.capacity() * sizeof(*buffer.data()));
  }
  buffer.resize(count);
}

}  // namespace bonsai::storage

#endif  // BONSAI_STORAGE_ALLOCATOR_TUNING_H_
