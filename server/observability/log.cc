#include "server/observability/log.h"

#include <atomic>
#include <cstdio>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace bonsai::observability {
namespace {

std::atomic<LogFormat> log_format{LogFormat::kText};

void Log(const char* level, std::string_view text) {
  const absl::string_view message(text.data(), text.size());
  const std::string stamp =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  if (log_format.load(std::memory_order_relaxed) == LogFormat::kJson) {
    WriteLogLine(absl::StrCat("{\"time\":\"", stamp, "\",\"level\":\"", level,
                              "\",\"message\":\"", JsonEscape(message), "\"}"));
    return;
  }
  WriteLogLine(absl::StrCat(stamp, " ", level, " ", message));
}

}  // namespace

absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_format must be text or json; got '", name, "'"));
}

void SetLogFormat(LogFormat format) { log_format.store(format, std::memory_order_relaxed); }
LogFormat CurrentLogFormat() { return log_format.load(std::memory_order_relaxed); }

void WriteLogLine(absl::string_view line) {
  // One fprintf per line so concurrent lines do not interleave.
  std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out;
}

void LogInfo(std::string_view message) { Log("INFO", message); }
void LogWarning(std::string_view message) { Log("WARN", message); }
void LogError(std::string_view message) { Log("ERROR", message); }

}  // namespace bonsai::observability
