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
#include "server/engine/job_plan.h"

namespace bonsai::engine {

using ProgressSink =
    std::function<void(v1::Stage stage, double fraction, std::string_view detail)>;

struct CompressionInput {
  const ValidatedSpec* spec = nullptr;
  std::string model_bytes;
  std::string calibration_bytes;  // safetensors; empty when none was sent
  double queue_seconds = 0;
  double receive_seconds = 0;
};

struct CompressionOutput {
  v1::CompressionReport report;
  std::string model;
};

absl::StatusOr<CompressionOutput> RunCompressionJob(CompressionInput input,
                                                    const ProgressSink& progress,
                                                    const CancellationToken& cancel);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_COMPRESSION_JOB_H_
