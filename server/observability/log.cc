#include "server/observability/log.h"

#include <cstdio>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace bonsai::observability {
namespace {

void Log(const char* level, std::string_view message) {
  const std::string stamp =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  // One fprintf per line so concurrent lines do not interleave.
  std::fprintf(stderr, "%s %s %.*s\n", stamp.c_str(), level, static_cast<int>(message.size()),
               message.data());
}

}  // namespace

void LogInfo(std::string_view message) { Log("INFO", message); }
void LogWarning(std::string_view message) { Log("WARN", message); }
void LogError(std::string_view message) { Log("ERROR", message); }

}  // namespace bonsai::observability
