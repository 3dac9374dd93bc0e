// Structured pruning in physical mode: whole channels leave the ONNX graph
// (surgery/channel_pruning.h does the surgery, on the model's
// formats::EditableGraph). It runs before the
// per-tensor methods because it changes which tensors exist and their
// shapes; the plan is rebuilt afterwards for whatever else the job does.
#ifndef BONSAI_SERVER_ENGINE_PHYSICAL_PRUNING_H_
#define BONSAI_SERVER_ENGINE_PHYSICAL_PRUNING_H_

#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/job_plan.h"
#include "server/formats/model.h"

namespace bonsai::engine {

// The group's method removes channels from the graph rather than zeroing
// weights (Method::removes_channels_from_graph).
bool IsPhysicalStructured(const MethodGroup& group);

// Runs the physical groups of `plan` on `model`, reports what they removed,
// and returns the plan for the remaining (non-physical) work, rebuilt
// against the changed model. `params_after`/`macs_*` go into the totals.
absl::StatusOr<CompressionPlan> ApplyPhysicalPruning(const ValidatedSpec& spec,
                                                     formats::Model& model,
                                                     CompressionPlan plan,
                                                     v1::CompressionReport& report);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_PHYSICAL_PRUNING_H_
