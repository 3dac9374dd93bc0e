// One log line per finished call (Compress or Inspect), so an operator can
// follow each job without metrics: who asked, for what, how big, how long,
// and how it ended. Text by default; JSON objects with --log_format=json.
#ifndef BONSAI_SERVER_OBSERVABILITY_JOB_LOG_H_
#define BONSAI_SERVER_OBSERVABILITY_JOB_LOG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace bonsai::observability {

// A process-wide number for each call, in order of arrival.
uint64_t NextJobId();

struct JobLogEntry {
  uint64_t id = 0;
  std::string rpc;     // "Compress", "Inspect"
  std::string peer;    // gRPC's peer string, e.g. "ipv4:10.0.0.7:51234"
  std::string method;  // "magnitude", "recipe", "-" for Inspect
  std::string format;  // "onnx", "safetensors", "unknown" before parsing
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
  double seconds = 0;
  absl::Status status;
};

void LogJob(const JobLogEntry& entry);

// The same entry as one line of text, or of JSON; exposed for tests.
std::string FormatJobLine(const JobLogEntry& entry, bool json);

// The version and build the binary reports (--version, GetCapabilities,
// bonsai_build_info).
std::string BuildVersion();
std::string BuildRevision();

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_JOB_LOG_H_
