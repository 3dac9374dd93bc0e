#include "server/observability/job_log.h"

#include <atomic>
#include <cstdio>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/observability/log.h"

#ifndef BONSAI_VERSION
#define BONSAI_VERSION "unknown"
#endif
#ifndef BONSAI_REVISION
#define BONSAI_REVISION "unknown"
#endif

namespace bonsai::observability {
namespace {

std::atomic<uint64_t> next_job_id{1};

// Text values are quoted when they hold a space, a quote or '=', so that a
// line splits into key=value pairs without ambiguity.
std::string TextValue(const std::string& value) {
  if (!value.empty() && value.find_first_of(" \"=\\") == std::string::npos) return value;
  return absl::StrCat("\"", JsonEscape(value), "\"");
}

}  // namespace

uint64_t NextJobId() { return next_job_id.fetch_add(1, std::memory_order_relaxed); }

std::string FormatJobLine(const JobLogEntry& entry, bool json) {
  const std::string code = absl::StatusCodeToString(entry.status.code());
  const std::string seconds = absl::StrFormat("%.3f", entry.seconds);
  if (json) {
    std::string line = absl::StrCat(
        "{\"time\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
        "\",\"level\":\"", entry.status.ok() ? "INFO" : "WARN", "\",\"event\":\"job\",\"id\":",
        entry.id, ",\"rpc\":\"", JsonEscape(entry.rpc), "\",\"peer\":\"", JsonEscape(entry.peer),
        "\",\"method\":\"", JsonEscape(entry.method), "\",\"format\":\"", JsonEscape(entry.format),
        "\",\"bytes_in\":", entry.bytes_in, ",\"bytes_out\":", entry.bytes_out,
        ",\"seconds\":", seconds, ",\"status\":\"", code, "\"");
    if (!entry.status.ok()) {
      absl::StrAppend(&line, ",\"message\":\"", JsonEscape(entry.status.message()), "\"");
    }
    return absl::StrCat(line, "}");
  }
  std::string line = absl::StrCat(
      "job id=", entry.id, " rpc=", entry.rpc, " peer=", TextValue(entry.peer),
      " method=", TextValue(entry.method), " format=", TextValue(entry.format),
      " bytes_in=", entry.bytes_in, " bytes_out=", entry.bytes_out, " seconds=", seconds,
      " status=", code);
  if (!entry.status.ok()) {
    absl::StrAppend(&line, " message=", TextValue(std::string(entry.status.message())));
  }
  return line;
}

void LogJob(const JobLogEntry& entry) {
  if (CurrentLogFormat() == LogFormat::kJson) {
    WriteLogLine(FormatJobLine(entry, /*json=*/true));
  } else if (entry.status.ok()) {
    LogInfo(FormatJobLine(entry, false));
  } else {
    LogWarning(FormatJobLine(entry, false));
  }
}

std::string BuildVersion() { return BONSAI_VERSION; }
std::string BuildRevision() { return BONSAI_REVISION; }

}  // namespace bonsai::observability
