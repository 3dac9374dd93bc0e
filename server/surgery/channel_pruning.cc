#include "server/surgery/channel_pruning.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/formats/onnx_graph_index.h"
#include "server/formats/onnx_tensor_data.h"
#include "server/methods/structured.h"
#include "server/surgery/channel_groups.h"
#include "server/surgery/channel_shapes.h"
#include "server/surgery/cuttable_tensor.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::surgery {
namespace {

using formats::OnnxGraphIndex;

// A group that passed every check, with its channel choice.
struct Plan {
  const ChannelGroup* group = nullptr;
  int64_t channels = 0;
  std::vector<int64_t> removed, keep;
};

std::string GroupName(const ChannelGroup& group) {
  return absl::StrCat("channels of ", absl::StrJoin(group.producer_weights, ", "));
}

const char* RoleName(SiteRole role) {
  switch (role) {
    case SiteRole::kProducer: return "producer";
    case SiteRole::kConsumer: return "consumer";
    case SiteRole::kParameter: return "parameter";
  }
  return "parameter";
}

uint64_t CountParams(const onnx::GraphProto& graph) {
  uint64_t params = 0;
  for (const onnx::TensorProto& tensor : graph.initializer()) {
    params += formats::OnnxElementCount(tensor);
  }
  return params;
}

// Every tensor the group would cut must be a FLOAT constant used once (a
// shared one would change its other users) with the group's channel count on
// the cut axis. Returns that count.
absl::StatusOr<int64_t> ValidateGroup(const OnnxGraphIndex& index, const ChannelGroup& group) {
  int64_t count = -1;
  for (const Site& site : group.sites) {
    const onnx::TensorProto* tensor = index.Constant(site.tensor);
    if (tensor == nullptr || site.axis >= tensor->dims_size()) {
      return absl::InternalError(absl::StrCat("'", site.tensor, "' is not a cuttable constant"));
    }
    if (absl::Status readable = CheckCuttable(*tensor); !readable.ok()) {
      return readable;
    }
    if (!index.ConstantUsedOnce(site.tensor)) {
      return absl::FailedPreconditionError(
          absl::StrCat("'", site.tensor, "' is shared with other nodes"));
    }
    const int64_t extent = tensor->dims(site.axis);
    if (count < 0 && site.role == SiteRole::kProducer) count = extent;
    if (extent != count) {
      return absl::FailedPreconditionError(absl::StrCat(
          "'", site.tensor, "' has ", extent, " channels on axis ", site.axis, ", not ", count));
    }
  }
  if (count < 1) return absl::InternalError("group without a producer");
  return count;
}

// One producer's per-channel norms, by the function mask mode ranks with.
// Producers are Conv W [out, in, k...] (channels on axis 0) and Gemm/MatMul
// B (axis 0 or 1 of a matrix), so the reduction axis is the other of the
// first two.
absl::StatusOr<std::vector<double>> ProducerNorms(const onnx::TensorProto& tensor, int axis,
                                                  methods::NormKind norm) {
  formats::TensorInfo info;
  info.name = tensor.name();
  info.shape.assign(tensor.dims().begin(), tensor.dims().end());
  info.layout = formats::WeightLayout{axis, axis == 0 ? 1 : 0};
  absl::StatusOr<std::vector<float>> values = ReadFloats(tensor);
  if (!values.ok()) return values.status();
  tensor::FloatTensor weights;
  weights.shape = info.shape;
  weights.values = *std::move(values);
  return methods::ChannelNorms(methods::WeightTensor{&info, &weights}, norm);
}

// Per-channel norms of the producers' weights, summed over the group.
absl::StatusOr<std::vector<double>> ScoreChannels(const OnnxGraphIndex& index,
                                                  const ChannelGroup& group, int64_t count,
                                                  methods::NormKind norm) {
  std::vector<double> scores(count, 0.0);
  for (const Site& site : group.sites) {
    if (site.role != SiteRole::kProducer) continue;
    absl::StatusOr<std::vector<double>> norms =
        ProducerNorms(*index.Constant(site.tensor), site.axis, norm);
    if (!norms.ok()) return norms.status();
    if (static_cast<int64_t>(norms->size()) != count) {
      return absl::InternalError(absl::StrCat("'", site.tensor, "' has ", norms->size(),
                                              " channels, not ", count));
    }
    for (int64_t c = 0; c < count; ++c) scores[c] += (*norms)[c];
  }
  return scores;
}

// The `k` lowest scores, by the same rule as mask mode.
Plan ChooseChannels(const std::vector<double>& scores, int64_t k) {
  Plan plan;
  plan.channels = static_cast<int64_t>(scores.size());
  plan.removed = methods::LowestChannels(scores, static_cast<uint64_t>(k));
  for (int64_t c = 0, r = 0; c < plan.channels; ++c) {
    if (r < k && plan.removed[r] == c) {
      ++r;
    } else {
      plan.keep.push_back(c);
    }
  }
  return plan;
}

bool IsSelected(const ChannelPruningOptions& options, const ChannelGroup& group) {
  if (!options.selected) return true;
  return std::all_of(group.producer_weights.begin(), group.producer_weights.end(),
                     [&](const std::string& name) { return options.selected(name); });
}

// Decides every group's channels without changing the model.
std::vector<Plan> PlanGroups(const OnnxGraphIndex& index, const std::vector<ChannelGroup>& groups,
                             const ChannelPruningOptions& options, std::vector<std::string>& notes) {
  std::vector<Plan> plans;
  for (const ChannelGroup& group : groups) {
    if (!IsSelected(options, group)) {
      if (options.selected && std::any_of(group.producer_weights.begin(), group.producer_weights.end(),
                                          options.selected)) {
        notes.push_back(absl::StrCat(GroupName(group),
                                     ": left alone: they share channels and not all are selected"));
      }
      continue;
    }
    if (!group.left_alone.empty()) {
      notes.push_back(absl::StrCat(GroupName(group), ": left alone: ", group.left_alone));
      continue;
    }
    absl::StatusOr<int64_t> count = ValidateGroup(index, group);
    if (!count.ok()) {
      notes.push_back(absl::StrCat(GroupName(group), ": left alone: ", count.status().message()));
      continue;
    }
    // The same count as mask mode (half to even, like torch's round).
    int64_t k = static_cast<int64_t>(tensor::PruneCount(options.fraction, *count));
    if (k >= *count) {
      k = *count - 1;
      notes.push_back(absl::StrCat(GroupName(group), ": kept one channel of ", *count));
    }
    if (k <= 0) continue;
    absl::StatusOr<std::vector<double>> scores = ScoreChannels(index, group, *count, options.norm);
    if (!scores.ok()) {
      notes.push_back(absl::StrCat(GroupName(group), ": left alone: ", scores.status().message()));
      continue;
    }
    Plan plan = ChooseChannels(*scores, k);
    plan.group = &group;
    plans.push_back(std::move(plan));
  }
  return plans;
}

// Cuts every planned tensor. Plans were validated, so an error here is ours.
absl::Status ApplyPlans(OnnxGraphIndex& index, const std::vector<Plan>& plans,
                        ChannelPruningResult& result) {
  absl::flat_hash_map<std::string, size_t> record_of;
  for (const Plan& plan : plans) {
    for (const Site& site : plan.group->sites) {
      onnx::TensorProto& tensor = *index.Constant(site.tensor);
      // The initializer's own name, also when the graph reads it through Identity.
      const std::string& name = tensor.name().empty() ? site.tensor : tensor.name();
      auto [it, inserted] = record_of.try_emplace(name, result.tensors.size());
      if (inserted) {
        PrunedTensor record;
        record.name = name;
        record.role = RoleName(site.role);
        record.shape_before.assign(tensor.dims().begin(), tensor.dims().end());
        result.tensors.push_back(std::move(record));
      }
      PrunedTensor& record = result.tensors[it->second];
      if (!inserted && record.role.find(RoleName(site.role)) == std::string::npos) {
        absl::StrAppend(&record.role, "+", RoleName(site.role));
      }
      if (absl::Status status = KeepIndices(tensor, site.axis, plan.keep); !status.ok()) {
        return absl::InternalError(absl::StrCat("cutting '", site.tensor, "': ", status.message()));
      }
      record.cuts.push_back({site.axis, site.role == SiteRole::kConsumer, plan.removed});
      record.shape_after.assign(tensor.dims().begin(), tensor.dims().end());
    }
    for (const std::string& output : plan.group->depthwise_outputs) {
      for (onnx::AttributeProto& attribute : *index.Producer(output)->mutable_attribute()) {
        if (attribute.name() == "group") attribute.set_i(static_cast<int64_t>(plan.keep.size()));
      }
    }
    result.groups.push_back({plan.group->producer_weights, plan.channels,
                             plan.channels - static_cast<int64_t>(plan.removed.size()),
                             plan.removed});
  }
  return absl::OkStatus();
}

// Declared shapes that named the old channel counts: value_info is dropped so
// shape inference recomputes it; an initializer listed as a graph input gets
// its new shape.
void UpdateDeclaredShapes(onnx::GraphProto& graph, const std::vector<Plan>& plans,
                          const ChannelPruningResult& result) {
  absl::flat_hash_set<std::string> stale;
  for (const Plan& plan : plans) {
    stale.insert(plan.group->activations.begin(), plan.group->activations.end());
    for (const Site& site : plan.group->sites) stale.insert(site.tensor);
  }
  absl::flat_hash_map<std::string, const PrunedTensor*> cut;
  for (const PrunedTensor& tensor : result.tensors) cut[tensor.name] = &tensor;
  auto* infos = graph.mutable_value_info();
  infos->erase(std::remove_if(infos->begin(), infos->end(),
                              [&](const onnx::ValueInfoProto& info) {
                                return stale.contains(info.name()) || cut.contains(info.name());
                              }),
               infos->end());
  for (onnx::ValueInfoProto& input : *graph.mutable_input()) {
    auto it = cut.find(input.name());
    if (it == cut.end() || !input.type().has_tensor_type()) continue;
    onnx::TensorShapeProto* shape = input.mutable_type()->mutable_tensor_type()->mutable_shape();
    shape->clear_dim();
    for (int64_t dim : it->second->shape_after) shape->add_dim()->set_dim_value(dim);
  }
}

}  // namespace

absl::StatusOr<ChannelPruningResult> PruneChannelsPhysically(onnx::ModelProto& model,
                                                             const ChannelPruningOptions& options) {
  if (!(options.fraction >= 0.0 && options.fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("channel fraction must be in [0, 1], got ", options.fraction));
  }
  ChannelPruningResult result;
  ShapeMap shapes;
  if (absl::StatusOr<ShapeMap> inferred = InferShapesWithoutWeights(model);
      inferred.ok()) {
    shapes = *std::move(inferred);
  } else {
    result.notes.push_back(absl::StrCat(inferred.status().message(),
                                        "; channels are followed without known shapes"));
  }
  OnnxGraphIndex index(*model.mutable_graph());
  ChannelAnalysis analysis = AnalyzeChannels(index, shapes);
  result.notes.insert(result.notes.end(), analysis.notes.begin(), analysis.notes.end());
  const std::vector<Plan> plans = PlanGroups(index, analysis.groups, options, result.notes);

  const MacCount before = CountMacs(index, shapes);
  result.params_before = CountParams(model.graph());
  result.macs_before = before.macs;
  if (absl::Status status = ApplyPlans(index, plans, result); !status.ok()) return status;
  UpdateDeclaredShapes(*model.mutable_graph(), plans, result);
  // Pruning keeps every spatial size, so the shapes from before still apply.
  const MacCount after = CountMacs(index, shapes);
  result.params_after = CountParams(model.graph());
  result.macs_after = after.macs;
  result.macs_per_position = before.per_position;
  if (before.per_position) {
    result.notes.push_back(
        "some Conv output sizes are unknown (dynamic input shape): their MACs count one position");
  }
  return result;
}

}  // namespace bonsai::surgery
