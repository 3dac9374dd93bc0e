// bonsai's one logging path (Debian's Abseil 20220623 has no absl/log):
// one line per event on stderr, with a UTC timestamp and a level.
#ifndef BONSAI_SERVER_OBSERVABILITY_LOG_H_
#define BONSAI_SERVER_OBSERVABILITY_LOG_H_

#include <string_view>

namespace bonsai::observability {

void LogInfo(std::string_view message);
void LogWarning(std::string_view message);
void LogError(std::string_view message);

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_LOG_H_
