// The one index of an ONNX graph's names: who produces a tensor, who reads
// it (here and inside If/Loop/Scan bodies), which names are constants. The
// format uses it to classify weights and find output heads; graph surgery
// (server/surgery/) uses it to follow channels and to cut constants.
//
// Uses are looked up by name over the whole model: a tensor read by any node
// anywhere under that name counts. ONNX forbids a subgraph name from
// shadowing an outer one, so for valid models this equals innermost-scope
// resolution. Producers, consumers and constants are the top graph's.
#ifndef BONSAI_SERVER_FORMATS_ONNX_GRAPH_INDEX_H_
#define BONSAI_SERVER_FORMATS_ONNX_GRAPH_INDEX_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "onnx/onnx_pb.h"

namespace bonsai::formats {

struct OnnxUse {
  onnx::NodeProto* node = nullptr;
  int input = 0;
};

class OnnxGraphIndex {
 public:
  // Indexes `graph`, which must outlive the index and keep its nodes and
  // initializers in place (their values may change, their number not).
  explicit OnnxGraphIndex(onnx::GraphProto& graph);

  onnx::GraphProto& graph() { return graph_; }
  const onnx::GraphProto& graph() const { return graph_; }

  // The initializer, or the value of the Constant node, named `name`, also
  // when read through Identity nodes.
  onnx::TensorProto* Constant(const std::string& name) const;
  bool IsInitializer(const std::string& name) const { return initializers_.contains(name); }

  onnx::NodeProto* Producer(const std::string& name) const;
  // Nodes of the top graph that read `name`, in node order.
  const std::vector<OnnxUse>& Consumers(const std::string& name) const;
  // Every node input that names `name`, in this graph and its subgraphs, in
  // the order a depth-first walk meets them (a node's inputs, then its
  // bodies).
  const std::vector<OnnxUse>& Uses(const std::string& name) const;
  int UseCount(const std::string& name) const { return static_cast<int>(Uses(name).size()); }
  // The constant `name` and every Identity it is read through are used
  // once, so cutting it changes nothing else.
  bool ConstantUsedOnce(const std::string& name) const;
  bool IsGraphOutput(const std::string& name) const { return outputs_.contains(name); }
  // Read by a node of an If/Loop/Scan body, where channels are not followed.
  bool UsedInSubgraph(const std::string& name) const {
    return Uses(name).size() > Consumers(name).size();
  }

 private:
  void IndexSubgraph(onnx::GraphProto& body);
  void IndexBodies(onnx::NodeProto& node);

  onnx::GraphProto& graph_;
  absl::flat_hash_map<std::string, onnx::TensorProto*> initializers_;
  absl::flat_hash_map<std::string, onnx::TensorProto*> constant_nodes_;
  absl::flat_hash_map<std::string, onnx::NodeProto*> producers_;
  absl::flat_hash_map<std::string, std::vector<OnnxUse>> consumers_;
  absl::flat_hash_map<std::string, std::vector<OnnxUse>> uses_;
  absl::flat_hash_set<std::string> outputs_;
};

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_ONNX_GRAPH_INDEX_H_
