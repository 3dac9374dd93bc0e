#include "server/storage/system_limits.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

namespace bonsai::storage {
namespace {

// A number from a cgroup file; 0 for "max", a missing file or garbage.
uint64_t ReadLimit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text == "max") return 0;
  try {
    return std::stoull(text);
  } catch (...) {
    return 0;
  }
}

}  // namespace

uint64_t AvailableMemoryBytes() {
  const uint64_t ram = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGE_SIZE));
  uint64_t limit = ReadLimit("/sys/fs/cgroup/memory.max");
  if (limit == 0) limit = ReadLimit("/sys/fs/cgroup/memory/memory.limit_in_bytes");
  return limit > 0 && limit < ram ? limit : ram;  // v1 reports ~2^63 for "no limit"
}

uint64_t DefaultMemoryBudget() {
  const uint64_t available = AvailableMemoryBytes() / 4 * 3;
  constexpr uint64_t kServer = 256ull << 20;
  return available > 2 * kServer ? available - kServer : available / 2;
}

uint64_t DefaultSpoolBudget(const std::string& dir) {
  struct statvfs fs;
  if (statvfs(dir.c_str(), &fs) != 0) return 0;
  return uint64_t(fs.f_bavail) * fs.f_frsize / 10 * 9;
}

}  // namespace bonsai::storage
