// bonsai's one logging path (Debian's Abseil 20220623 has no absl/log):
// one line per event on stderr, with a UTC timestamp and a level; with
// --log_format=json each line is a JSON object {time, level, message}.
#ifndef BONSAI_SERVER_OBSERVABILITY_LOG_H_
#define BONSAI_SERVER_OBSERVABILITY_LOG_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace bonsai::observability {

enum class LogFormat { kText, kJson };

// "text" or "json"; anything else is INVALID_ARGUMENT naming the choices.
absl::StatusOr<LogFormat> ParseLogFormat(absl::string_view name);
void SetLogFormat(LogFormat format);
LogFormat CurrentLogFormat();

void LogInfo(std::string_view message);
void LogWarning(std::string_view message);
void LogError(std::string_view message);

// Writes one finished line (no level or time added) to stderr.
void WriteLogLine(absl::string_view line);
// `text` as the inside of a JSON string.
std::string JsonEscape(absl::string_view text);

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_LOG_H_
