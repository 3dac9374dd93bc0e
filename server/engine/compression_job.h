// One compression job from uploaded bytes to output bytes and report:
// parse -> plan -> (observation passes) -> apply per tensor -> serialize ->
// digest. Runs on a worker thread; knows nothing of gRPC. Progress goes out
// through a sink, cancellation comes in through a token polled between
// tensors and inside long methods.
#ifndef BONSAI_SERVER_ENGINE_COMPRESSION_JOB_H_
#define BONSAI_SERVER_ENGINE_COMPRESSION_JOB_H_

#include <functional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/cancellation.h"
#include "server/engine/global_exchange.h"
#include "server/engine/job_output.h"
#include "server/engine/job_plan.h"
#include "server/engine/job_scheduler.h"
#include "server/formats/model_files.h"
#include "server/storage/byte_budget.h"

namespace bonsai::engine {

using ProgressSink =
    std::function<void(v1::Stage stage, double fraction, std::string_view detail)>;

struct CompressionInput {
  const ValidatedSpec* spec = nullptr;
  // The model's files; reads wait for bytes still uploading, so the job
  // starts on the first tensors while the rest arrives.
  std::vector<formats::InputFile> files;
  std::optional<formats::InputFile> calibration;  // safetensors, when sent
  JobOutput* output = nullptr;                     // where the files go
  // Working memory over all running jobs; the job waits for its estimate
  // (null: no budget).
  storage::ByteBudget* memory = nullptr;
  // Where the job gets a core for each tensor's computation (null: it
  // computes whenever it likes, as in benchmarks).
  CoreGate* cores = nullptr;
  // Set when the spec asks for exchange_global_cuts: global groups are
  // settled with the client over several jobs (global_exchange.h).
  GlobalCutExchange* exchange = nullptr;
  double queue_seconds = 0;
};

// The report, once the last output file has ended; its timings for the
// upload and the send are the caller's to fill.
absl::StatusOr<v1::CompressionReport> RunCompressionJob(CompressionInput input,
                                                        const ProgressSink& progress,
                                                        const CancellationToken& cancel);

// The working memory a job on `model` needs beyond the spool: one tensor's
// stored bytes and float copy, the method's buffers, calibration statistics
// held in memory, and what the format keeps resident.
uint64_t EstimateJobMemory(const formats::Model& model, uint64_t calibration_bytes);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_COMPRESSION_JOB_H_
