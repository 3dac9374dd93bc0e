// Inspect: the same upload as Compress, no change. Lists every tensor with
// its zeros and whether bonsai would compress it.
#ifndef BONSAI_SERVER_ENGINE_INSPECT_JOB_H_
#define BONSAI_SERVER_ENGINE_INSPECT_JOB_H_

#include <string>
#include <vector>

#include "server/formats/model_files.h"

#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/cancellation.h"

namespace bonsai::engine {

// Safetensors files sent header-only are listed from their headers alone
// (zeros_known false): a multi-GB checkpoint is inspected in well under a
// second.
absl::StatusOr<v1::InspectResponse> RunInspectJob(const v1::InspectSpec& spec,
                                                  std::vector<formats::InputFile> files,
                                                  const CancellationToken& cancel);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_INSPECT_JOB_H_
