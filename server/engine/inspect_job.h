// Inspect: the same upload as Compress, no change. Lists every tensor with
// its zeros and whether bonsai would compress it.
#ifndef BONSAI_SERVER_ENGINE_INSPECT_JOB_H_
#define BONSAI_SERVER_ENGINE_INSPECT_JOB_H_

#include <string>

#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/cancellation.h"

namespace bonsai::engine {

absl::StatusOr<v1::InspectResponse> RunInspectJob(const v1::InspectSpec& spec,
                                                  std::string model_bytes,
                                                  const CancellationToken& cancel);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_INSPECT_JOB_H_
