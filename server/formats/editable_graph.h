// A model whose operator graph may be rewritten: what graph surgery
// (server/surgery/) needs from a format. ONNX offers it; safetensors holds
// tensors without a graph and does not (Model::editable_graph() is null).
#ifndef BONSAI_SERVER_FORMATS_EDITABLE_GRAPH_H_
#define BONSAI_SERVER_FORMATS_EDITABLE_GRAPH_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "onnx/onnx_pb.h"

namespace bonsai::formats {

class EditableGraph {
 public:
  virtual ~EditableGraph() = default;

  // Runs `edit` on the parsed ONNX model and, when it succeeds, indexes the
  // model's tensors again: Model::tensors() and every index into it may
  // change (tensors gone, shapes cut). A failed edit returns its status
  // without reindexing; the job is over then.
  virtual absl::Status Edit(absl::FunctionRef<absl::Status(onnx::ModelProto&)> edit) = 0;
};

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_EDITABLE_GRAPH_H_
