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

// This process's own cgroup path for a controller, from /proc/self/cgroup:
// "0::/path" (v2) or "N:memory:/path" (v1).
std::string OwnCgroup(bool v2) {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    const size_t first = line.find(':');
    const size_t second = line.find(':', first + 1);
    if (first == std::string::npos || second == std::string::npos) continue;
    const std::string controllers = line.substr(first + 1, second - first - 1);
    if (v2 ? controllers.empty() : controllers.find("memory") != std::string::npos) {
      return line.substr(second + 1);
    }
  }
  return "/";
}

// The tightest limit from the process's cgroup up to the root.
uint64_t CgroupLimit(const std::string& root, const std::string& own, const char* file) {
  uint64_t tightest = 0;
  std::string path = own;
  while (true) {
    const uint64_t limit = ReadLimit((root + (path == "/" ? "" : path) + "/" + file).c_str());
    if (limit > 0 && (tightest == 0 || limit < tightest)) tightest = limit;
    if (path.empty() || path == "/") break;
    const size_t slash = path.rfind('/');
    path = slash == 0 || slash == std::string::npos ? "/" : path.substr(0, slash);
  }
  return tightest;
}

}  // namespace

uint64_t AvailableMemoryBytes() {
  const uint64_t ram = uint64_t(sysconf(_SC_PHYS_PAGES)) * uint64_t(sysconf(_SC_PAGE_SIZE));
  uint64_t limit = CgroupLimit("/sys/fs/cgroup", OwnCgroup(true), "memory.max");
  if (limit == 0) {
    limit = CgroupLimit("/sys/fs/cgroup/memory", OwnCgroup(false), "memory.limit_in_bytes");
  }
  return limit > 0 && limit < ram ? limit : ram;  // v1 reports ~2^63 for "no limit"
}

uint64_t DefaultMemoryBudget() {
  // The server's own memory (threads, gRPC buffers, allocator slack) is
  // about 30 MiB idle; an eighth of the limit and 128 MiB more stay free.
  const uint64_t available = AvailableMemoryBytes() / 8 * 7;
  constexpr uint64_t kServer = 128ull << 20;
  return available > 2 * kServer ? available - kServer : available / 2;
}

uint64_t DefaultSpoolBudget(const std::string& dir) {
  struct statvfs fs;
  if (statvfs(dir.c_str(), &fs) != 0) return 0;
  return uint64_t(fs.f_bavail) * fs.f_frsize / 10 * 9;
}

}  // namespace bonsai::storage
