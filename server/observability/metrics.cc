// Placeholder until the Prometheus wiring lands: every call is a no-op.
#include "server/observability/metrics.h"

namespace bonsai::observability {

absl::Status StartMetricsEndpoint(const std::string&, int) { return absl::OkStatus(); }
void RecordJob(std::string_view, std::string_view, JobOutcome) {}
void RecordStageSeconds(JobStage, double) {}
void RecordRejected(std::string_view) {}
void RecordReceivedBytes(uint64_t) {}
void RecordSentBytes(uint64_t) {}
void RecordModelBytes(uint64_t) {}
void RecordCompressionRatio(double) {}
void SetJobsRunning(int64_t) {}
void SetJobsQueued(int64_t) {}

}  // namespace bonsai::observability
