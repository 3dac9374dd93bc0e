// bonsai's Prometheus metrics, in one place. Handlers and the engine call
// these functions; nothing else in the server knows prometheus-cpp.
// Labels are low-cardinality by construction: method, format, outcome, stage,
// reason, gRPC method and code. Never a model name, tensor name or address.
#ifndef BONSAI_SERVER_OBSERVABILITY_METRICS_H_
#define BONSAI_SERVER_OBSERVABILITY_METRICS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace bonsai::observability {

enum class JobOutcome { kOk, kInvalid, kRejected, kCancelled, kFailed };
enum class JobStage { kQueueWait, kReceive, kParse, kCompress, kSerialize, kSend };
// Where an admitted job is now (bonsai_jobs_admitted{stage}).
enum class AdmittedStage { kReceiving, kQueued, kRunning, kSending };
inline constexpr size_t kAdmittedStageCount = 4;
using AdmittedJobCounts = std::array<int64_t, kAdmittedStageCount>;
using AdmittedJobsSource = std::function<AdmittedJobCounts()>;

// Starts the /metrics HTTP endpoint on `listen` ("0.0.0.0:9464"); an empty
// string leaves metrics collected but not served (tests).
absl::Status StartMetricsEndpoint(const std::string& listen, int workers);
// The port the metrics endpoint bound (the one chosen for ":0"); 0 when off.
int BoundMetricsPort();

// The methods the server offers (from the method registry), the values the
// method label may take besides "recipe", "inspect" and "other".
void SetMethodLabels(std::vector<std::string> methods);
// method: a method's name, "recipe" for a job with rules, "inspect".
void RecordJob(std::string_view method, std::string_view format, JobOutcome outcome);
void RecordStageSeconds(JobStage stage, double seconds);
// queue_full, peer_limit, too_large, spool_full, shutting_down
void RecordRejected(std::string_view reason);
void RecordReceivedBytes(uint64_t bytes);
void RecordSentBytes(uint64_t bytes);
void RecordModelBytes(uint64_t bytes);
void RecordCompressionRatio(double input_over_zstd_output);
void SetJobsRunning(int64_t running);
void SetJobsQueued(int64_t queued);
void SetJobSlots(int64_t slots);  // workers + max_queued_jobs
// Counted at each scrape; the server sets it once its calls exist and
// unsets it (nullptr) before they go.
void SetAdmittedJobsSource(AdmittedJobsSource counts);

// Label values outside the known sets (a misspelt method from a client, say)
// are recorded as "other", so no client can grow the number of series.
//   method: magnitude nm structured wanda sparsegpt binarize ternarize rtn gptq inspect
//   format: onnx safetensors (else "unknown")
//   reason: queue_full peer_limit too_large spool_full shutting_down

// The current exposition, as a scrape of /metrics would return it (tests).
std::string RenderMetricsText();

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_METRICS_H_
