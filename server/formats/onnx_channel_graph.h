// The lookups channel pruning needs on one ONNX graph (who produces and who
// consumes a tensor, which names are constants) and the float access to
// constant tensors that cutting channels needs. Internal to formats.
#ifndef BONSAI_SERVER_FORMATS_ONNX_CHANNEL_GRAPH_H_
#define BONSAI_SERVER_FORMATS_ONNX_CHANNEL_GRAPH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "onnx/onnx_pb.h"

namespace bonsai::formats::channels {

struct Use {
  onnx::NodeProto* node = nullptr;
  int input = 0;
};

class GraphIndex {
 public:
  // Indexes `graph`, which must outlive the index and keep its nodes and
  // initializers in place (their values may change, their number not).
  explicit GraphIndex(onnx::GraphProto& graph);

  onnx::GraphProto& graph() { return graph_; }
  const onnx::GraphProto& graph() const { return graph_; }

  // The initializer, or the value of the Constant node, named `name`, also
  // when read through Identity nodes.
  onnx::TensorProto* Constant(const std::string& name) const;
  bool IsInitializer(const std::string& name) const { return initializers_.contains(name); }

  onnx::NodeProto* Producer(const std::string& name) const;
  const std::vector<Use>& Consumers(const std::string& name) const;
  // Node inputs that name `name`, in this graph and in its subgraphs.
  int UseCount(const std::string& name) const;
  // The constant `name` and every Identity it is read through are used
  // once, so cutting it changes nothing else.
  bool ConstantUsedOnce(const std::string& name) const;
  bool IsGraphOutput(const std::string& name) const { return outputs_.contains(name); }
  // Read by a node of an If/Loop/Scan body, where we do not follow it.
  bool UsedInSubgraph(const std::string& name) const { return subgraph_uses_.contains(name); }

 private:
  onnx::GraphProto& graph_;
  absl::flat_hash_map<std::string, onnx::TensorProto*> initializers_;
  absl::flat_hash_map<std::string, onnx::TensorProto*> constant_nodes_;
  absl::flat_hash_map<std::string, onnx::NodeProto*> producers_;
  absl::flat_hash_map<std::string, std::vector<Use>> consumers_;
  absl::flat_hash_map<std::string, int> subgraph_uses_;
  absl::flat_hash_set<std::string> outputs_;
};

// Attribute lookups with the operator's default.
int64_t IntAttribute(const onnx::NodeProto& node, const std::string& name, int64_t fallback);
float FloatAttribute(const onnx::NodeProto& node, const std::string& name, float fallback);

uint64_t ElementCount(const onnx::TensorProto& tensor);

// Why the tensor's values cannot be read as float32 here; OK when they can
// (FLOAT, stored in raw_data or float_data, not external).
absl::Status CheckFloatReadable(const onnx::TensorProto& tensor);
absl::StatusOr<std::vector<float>> ReadFloats(const onnx::TensorProto& tensor);

// Keeps the `keep` indices (ascending) of `axis` and rewrites dims and data,
// in the storage field the tensor already used.
absl::Status KeepIndices(onnx::TensorProto& tensor, int axis,
                         const std::vector<int64_t>& keep);

}  // namespace bonsai::formats::channels

#endif  // BONSAI_SERVER_FORMATS_ONNX_CHANNEL_GRAPH_H_
