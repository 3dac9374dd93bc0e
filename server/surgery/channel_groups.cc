#include "server/surgery/channel_groups.h"

#include <algorithm>
#include <deque>
#include <numeric>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/formats/onnx_attributes.h"
#include "server/formats/onnx_output_heads.h"
#include "server/surgery/cuttable_tensor.h"

namespace bonsai::surgery {
namespace {

using formats::IsDefaultOnnxDomain;
using formats::OnnxGraphIndex;
using formats::OnnxIntAttribute;
using formats::OnnxUse;

// Ops whose output channel c depends only on input channel c, elementwise.
const absl::flat_hash_set<std::string>& UnaryOps() {
  static const auto* ops = new absl::flat_hash_set<std::string>{
      "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish",
      "Elu", "Selu", "Celu", "Gelu", "Softplus", "Softsign", "Mish", "ThresholdedRelu",
      "Erf", "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Floor", "Ceil",
      "Round", "Sign", "Sin", "Cos", "Identity", "Dropout", "Cast", "Shrink"};
  return *ops;
}

// Elementwise with broadcasting: constant operands are cut along the channel
// axis when they vary along it; non-constant operands must share the channels.
const absl::flat_hash_set<std::string>& BroadcastOps() {
  static const auto* ops = new absl::flat_hash_set<std::string>{
      "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"};
  return *ops;
}

// Pooling keeps channel c in channel c (NC... layout, channel axis 1).
const absl::flat_hash_set<std::string>& PoolOps() {
  static const auto* ops = new absl::flat_hash_set<std::string>{
      "MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"};
  return *ops;
}

std::string Describe(const onnx::NodeProto& node) {
  return node.name().empty() ? absl::StrCat(node.op_type(), " producing '", node.output(0), "'")
                             : absl::StrCat(node.op_type(), " '", node.name(), "'");
}

// An activation that carries a group's channels. The channel axis is counted
// from the end because broadcasting aligns shapes from the end.
struct Carrier {
  int group = 0;
  int rank = -1;  // -1: unknown
  int from_end = 1;
  bool spatial_one = false;  // every dim after the channel axis is 1

  bool ChannelAxisIsOne() const { return rank >= 0 && rank - from_end == 1; }
};

struct WorkingGroup {
  std::vector<std::string> producer_weights;
  std::vector<int> producer_order;
  std::vector<Site> sites;
  std::vector<std::string> activations;
  std::vector<std::string> depthwise;
  std::vector<std::string> reasons;
};

class Analyzer {
 public:
  Analyzer(const OnnxGraphIndex& index, const ShapeMap& shapes) : index_(index), shapes_(shapes) {}

  ChannelAnalysis Run() {
    int order = 0;
    for (const onnx::NodeProto& node : index_.graph().node()) StartGroup(node, order++);
    while (!queue_.empty()) {
      std::string name = queue_.front();
      queue_.pop_front();
      Propagate(name);
    }
    CheckMerges();
    heads_ = formats::WeightsReachingGraphOutputs(index_);
    return Collect();
  }

 private:
  int Root(int group) {
    while (parent_[group] != group) group = parent_[group] = parent_[parent_[group]];
    return group;
  }

  void Fail(int group, std::string reason) { groups_[Root(group)].reasons.push_back(std::move(reason)); }

  void Union(int a, int b) {
    a = Root(a);
    b = Root(b);
    if (a == b) return;
    if (b < a) std::swap(a, b);
    parent_[b] = a;
    WorkingGroup& into = groups_[a];
    WorkingGroup& from = groups_[b];
    for (size_t i = 0; i < from.producer_weights.size(); ++i) {
      into.producer_weights.push_back(from.producer_weights[i]);
      into.producer_order.push_back(from.producer_order[i]);
    }
    into.sites.insert(into.sites.end(), from.sites.begin(), from.sites.end());
    into.activations.insert(into.activations.end(), from.activations.begin(), from.activations.end());
    into.depthwise.insert(into.depthwise.end(), from.depthwise.begin(), from.depthwise.end());
    into.reasons.insert(into.reasons.end(), from.reasons.begin(), from.reasons.end());
    from = WorkingGroup{};
  }

  void AddSite(int group, const std::string& tensor, int axis, SiteRole role) {
    groups_[Root(group)].sites.push_back({tensor, axis, role});
  }

  // The rank and 1-sized trailing dims that shape inference knows of.
  void RefineFromShapes(const std::string& name, Carrier& carrier) const {
    auto it = shapes_.find(name);
    if (it == shapes_.end()) return;
    const std::vector<int64_t>& dims = it->second;
    carrier.rank = static_cast<int>(dims.size());
    const int axis = carrier.rank - carrier.from_end;
    if (axis < 0) return;
    carrier.spatial_one = std::all_of(dims.begin() + axis + 1, dims.end(),
                                      [](int64_t d) { return d == 1; }) ||
                          carrier.spatial_one;
  }

  int KnownRank(const std::string& name) const {
    if (const onnx::TensorProto* tensor = index_.Constant(name)) return tensor->dims_size();
    if (auto it = shapes_.find(name); it != shapes_.end()) return static_cast<int>(it->second.size());
    if (auto it = carriers_.find(name); it != carriers_.end()) return it->second.rank;
    return -1;
  }

  void Assign(const std::string& name, Carrier carrier) {
    RefineFromShapes(name, carrier);
    auto [it, inserted] = carriers_.try_emplace(name, carrier);
    if (!inserted) {
      if (it->second.from_end != carrier.from_end) {
        Fail(carrier.group, absl::StrCat("'", name, "' carries channels on two different axes"));
      }
      Union(it->second.group, carrier.group);
      return;
    }
    groups_[Root(carrier.group)].activations.push_back(name);
    queue_.push_back(name);
  }

  // Conv (group 1), Gemm and MatMul with a constant weight start a group.
  void StartGroup(const onnx::NodeProto& node, int order) {
    if (!IsDefaultOnnxDomain(node) || node.input_size() < 2 || node.output_size() < 1) return;
    const std::string& op = node.op_type();
    if (op != "Conv" && op != "Gemm" && op != "MatMul") return;
    const onnx::TensorProto* weight = index_.Constant(node.input(1));
    if (weight == nullptr) return;  // activations times activations: nothing to prune
    Carrier carrier;
    int out_axis = 0;
    if (op == "Conv") {
      if (int64_t g = OnnxIntAttribute(node, "group", 1); g != 1) {
        // A depthwise Conv passes its input's channels through (Follow);
        // other grouped ones are left alone.
        if (!IsDepthwise(node, *weight)) {
          notes_.push_back(absl::StrCat(Describe(node), ": grouped convolution (group ", g,
                                        ") left alone, and so are the channels it reads"));
        }
        return;
      }
      if (weight->dims_size() < 3) return;
      carrier.rank = weight->dims_size();
      carrier.from_end = carrier.rank - 1;
    } else {
      if (weight->dims_size() != 2) return;
      out_axis = (op == "Gemm" && OnnxIntAttribute(node, "transB", 0) != 0) ? 0 : 1;
      carrier.rank = op == "Gemm" ? 2 : -1;
      carrier.from_end = 1;
    }
    if (absl::Status readable = CheckCuttable(*weight); !readable.ok()) {
      notes_.push_back(absl::StrCat(Describe(node), ": left alone: ", readable.message()));
      return;
    }
    if (!index_.ConstantUsedOnce(node.input(1))) {
      notes_.push_back(absl::StrCat(Describe(node), ": left alone: weight '", node.input(1),
                                    "' is shared with other nodes"));
      return;
    }
    const int group = static_cast<int>(groups_.size());
    groups_.emplace_back();
    parent_.push_back(group);
    groups_[group].producer_weights.push_back(weight->name().empty() ? node.input(1) : weight->name());
    groups_[group].producer_order.push_back(order);
    AddSite(group, node.input(1), out_axis, SiteRole::kProducer);
    carrier.group = group;
    if (node.input_size() > 2 && !node.input(2).empty()) {
      if (op == "Conv") {
        // Conv's B is [out], one value per output channel.
        if (index_.Constant(node.input(2)) == nullptr) {
          Fail(group, absl::StrCat(Describe(node), " has a non-constant bias"));
        } else {
          AddSite(group, node.input(2), 0, SiteRole::kParameter);
        }
      } else if (!AddConstantOperand(group, node, node.input(2), carrier)) {
        // Gemm's C broadcasts to [N, out] like the operand of an Add.
        return;
      }
    }
    Assign(node.output(0), carrier);
  }

  // A constant operand broadcast against the channels: cut along the
  // channel axis when it varies along it, untouched when it does not.
  bool AddConstantOperand(int group, const onnx::NodeProto& node, const std::string& name,
                          const Carrier& carrier) {
    const onnx::TensorProto* tensor = index_.Constant(name);
    if (tensor == nullptr) {
      Fail(group, absl::StrCat(Describe(node), " adds '", name, "', which is not a constant"));
      return false;
    }
    const int axis = tensor->dims_size() - carrier.from_end;
    if (axis < 0 || tensor->dims(axis) == 1) return true;
    AddSite(group, name, axis, SiteRole::kParameter);
    return true;
  }

  void Propagate(const std::string& name) {
    const Carrier carrier = carriers_.at(name);
    if (index_.IsGraphOutput(name)) {
      Fail(carrier.group, absl::StrCat("channels reach graph output '", name, "'"));
    }
    if (index_.UsedInSubgraph(name)) {
      Fail(carrier.group, absl::StrCat("'", name, "' is read inside a subgraph"));
    }
    for (const OnnxUse& use : index_.Consumers(name)) Follow(*use.node, use.input, carrier);
  }

  // Fails unless only output 0 of `node` is used (Dropout's mask, MaxPool's
  // indices, BatchNormalization's training statistics).
  bool OnlyFirstOutputUsed(int group, const onnx::NodeProto& node) {
    for (int i = 1; i < node.output_size(); ++i) {
      const std::string& out = node.output(i);
      if (!out.empty() && (index_.UseCount(out) > 0 || index_.IsGraphOutput(out))) {
        Fail(group, absl::StrCat(Describe(node), " has its output '", out, "' used"));
        return false;
      }
    }
    return true;
  }

  bool RequireAxisOne(const onnx::NodeProto& node, const Carrier& carrier) {
    if (carrier.ChannelAxisIsOne()) return true;
    Fail(carrier.group, absl::StrCat(Describe(node), " reads channels that are not on axis 1"
                                     " (or whose rank is unknown)"));
    return false;
  }

  void Follow(const onnx::NodeProto& node, int input, Carrier carrier) {
    const std::string& op = node.op_type();
    const int group = carrier.group;
    if (!IsDefaultOnnxDomain(node)) {
      Fail(group, absl::StrCat("channels reach ", Describe(node), " of domain '", node.domain(), "'"));
    } else if (UnaryOps().contains(op)) {
      if (input != 0) {
        Fail(group, absl::StrCat("channels are a parameter of ", Describe(node)));
      } else if (OnlyFirstOutputUsed(group, node)) {
        Assign(node.output(0), carrier);
      }
    } else if (PoolOps().contains(op)) {
      if (RequireAxisOne(node, carrier) && OnlyFirstOutputUsed(group, node)) {
        carrier.spatial_one = carrier.spatial_one || op.rfind("Global", 0) == 0;
        Assign(node.output(0), carrier);
      }
    } else if (op == "BatchNormalization" || op == "InstanceNormalization") {
      FollowNormalization(node, input, carrier);
    } else if (BroadcastOps().contains(op)) {
      FollowBroadcast(node, input, carrier);
    } else if (op == "Flatten") {
      if (OnnxIntAttribute(node, "axis", 1) == 1 && carrier.ChannelAxisIsOne() &&
          carrier.spatial_one) {
        // [N, C, 1, 1] -> [N, C]: channel c stays feature c.
        Assign(node.output(0), Carrier{group, 2, 1, true});
      } else {
        Fail(group, absl::StrCat("channels reach ", Describe(node),
                                 ", which mixes them with spatial positions"));
      }
    } else if (op == "Conv" || op == "Gemm" || op == "MatMul") {
      FollowConsumer(node, input, carrier);
    } else {
      Fail(group, absl::StrCat("channels reach ", Describe(node),
                               ", whose channel mapping is not followed"));
    }
  }

  void FollowNormalization(const onnx::NodeProto& node, int input, const Carrier& carrier) {
    if (input != 0) {
      Fail(carrier.group, absl::StrCat("channels are a parameter of ", Describe(node)));
      return;
    }
    if (!RequireAxisOne(node, carrier) || !OnlyFirstOutputUsed(carrier.group, node)) return;
    for (int i = 1; i < node.input_size(); ++i) {
      if (index_.Constant(node.input(i)) == nullptr) {
        Fail(carrier.group, absl::StrCat(Describe(node), " has a non-constant parameter"));
        return;
      }
      AddSite(carrier.group, node.input(i), 0, SiteRole::kParameter);
    }
    Assign(node.output(0), carrier);
  }

  void FollowBroadcast(const onnx::NodeProto& node, int input, Carrier carrier) {
    bool merges = false;
    for (int i = 0; i < node.input_size(); ++i) {
      const std::string& other = node.input(i);
      if (i == input || other.empty()) continue;
      if (index_.Constant(other) != nullptr) {
        if (!AddConstantOperand(carrier.group, node, other, carrier)) return;
      } else {
        merges = true;
      }
    }
    // Broadcasting gives the output the highest rank among the inputs.
    for (const std::string& other : node.input()) carrier.rank = std::max(carrier.rank, KnownRank(other));
    if (merges) merges_.push_back(&node);
    Assign(node.output(0), carrier);
  }

  void FollowConsumer(const onnx::NodeProto& node, int input, const Carrier& carrier) {
    const std::string& op = node.op_type();
    const onnx::TensorProto* weight =
        node.input_size() > 1 ? index_.Constant(node.input(1)) : nullptr;
    if (input != 0 || weight == nullptr) {
      Fail(carrier.group, absl::StrCat("channels reach ", Describe(node),
                                       " other than as its input with a constant weight"));
      return;
    }
    if (op == "Conv") {
      if (IsDepthwise(node, *weight)) {
        FollowDepthwise(node, carrier);
      } else if (int64_t g = OnnxIntAttribute(node, "group", 1); g != 1) {
        Fail(carrier.group, absl::StrCat("channels feed ", Describe(node),
                                         ", a grouped convolution (group ", g, ")"));
      } else if (RequireAxisOne(node, carrier)) {
        AddSite(carrier.group, node.input(1), 1, SiteRole::kConsumer);
      }
      return;
    }
    if (carrier.from_end != 1 || weight->dims_size() != 2 ||
        (op == "Gemm" && OnnxIntAttribute(node, "transA", 0) != 0)) {
      Fail(carrier.group, absl::StrCat(Describe(node), " does not reduce over the channel axis"));
      return;
    }
    const int axis = (op == "Gemm" && OnnxIntAttribute(node, "transB", 0) != 0) ? 1 : 0;
    AddSite(carrier.group, node.input(1), axis, SiteRole::kConsumer);
  }

  // Depthwise (one filter per channel, W [C, 1, k...], group C): output
  // channel c is input channel c filtered, so the channels pass through; the
  // filters, the bias and the group attribute shrink with them.
  static bool IsDepthwise(const onnx::NodeProto& node, const onnx::TensorProto& weight) {
    const int64_t group = OnnxIntAttribute(node, "group", 1);
    return group > 1 && weight.dims_size() >= 3 && weight.dims(0) == group && weight.dims(1) == 1;
  }

  void FollowDepthwise(const onnx::NodeProto& node, const Carrier& carrier) {
    if (!RequireAxisOne(node, carrier)) return;
    if (node.input_size() > 2 && !node.input(2).empty()) {
      if (index_.Constant(node.input(2)) == nullptr) {
        Fail(carrier.group, absl::StrCat(Describe(node), " has a non-constant bias"));
        return;
      }
      AddSite(carrier.group, node.input(2), 0, SiteRole::kParameter);
    }
    AddSite(carrier.group, node.input(1), 0, SiteRole::kParameter);
    groups_[Root(carrier.group)].depthwise.push_back(node.output(0));
    Assign(node.output(0), carrier);
  }

  // An elementwise op with several non-constant inputs needs all of them to
  // carry the same channels: they were joined as they met, and an input no
  // group reaches (a graph input, an unfollowed branch) pins them all.
  void CheckMerges() {
    for (const onnx::NodeProto* node : merges_) {
      const int group = carriers_.at(node->output(0)).group;
      for (const std::string& input : node->input()) {
        if (input.empty() || index_.Constant(input) != nullptr) continue;
        if (!carriers_.contains(input)) {
          Fail(group, absl::StrCat(Describe(*node), " combines the channels with '", input,
                                   "', which no prunable producer makes"));
        }
      }
    }
  }

  ChannelAnalysis Collect() {
    ChannelAnalysis analysis;
    analysis.notes = std::move(notes_);
    for (int g = 0; g < static_cast<int>(groups_.size()); ++g) {
      if (Root(g) != g) continue;
      WorkingGroup& working = groups_[g];
      ChannelGroup group;
      // Graph order of producers; the producer sites keep the same order.
      std::vector<size_t> order(working.producer_weights.size());
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        return working.producer_order[a] < working.producer_order[b];
      });
      for (size_t i : order) group.producer_weights.push_back(working.producer_weights[i]);
      std::stable_partition(working.sites.begin(), working.sites.end(),
                            [](const Site& s) { return s.role == SiteRole::kProducer; });
      group.sites = std::move(working.sites);
      group.activations = std::move(working.activations);
      group.depthwise_outputs = std::move(working.depthwise);
      // Channels may also reach an output through ops not followed here
      // (Softmax, Reshape): both structured modes leave such groups whole.
      for (const std::string& weight : group.producer_weights) {
        auto head = heads_.find(weight);
        if (head == heads_.end()) continue;
        std::string reason = absl::StrCat("channels reach graph output '", head->second, "'");
        if (std::find(working.reasons.begin(), working.reasons.end(), reason) ==
            working.reasons.end()) {
          working.reasons.push_back(std::move(reason));
        }
      }
      group.left_alone = absl::StrJoin(working.reasons, "; ");
      analysis.groups.push_back(std::move(group));
    }
    return analysis;
  }

  const OnnxGraphIndex& index_;
  const ShapeMap& shapes_;
  std::vector<WorkingGroup> groups_;
  std::vector<int> parent_;
  absl::flat_hash_map<std::string, Carrier> carriers_;
  std::deque<std::string> queue_;
  std::vector<const onnx::NodeProto*> merges_;
  std::vector<std::string> notes_;
  absl::flat_hash_map<std::string, std::string> heads_;
};

}  // namespace

ChannelAnalysis AnalyzeChannels(const OnnxGraphIndex& index, const ShapeMap& shapes) {
  return Analyzer(index, shapes).Run();
}

}  // namespace bonsai::surgery
