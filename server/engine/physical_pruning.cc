#include "server/engine/physical_pruning.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/formats/editable_graph.h"
#include "server/surgery/channel_pruning.h"

namespace bonsai::engine {
namespace {

void ReportPrunedTensor(const surgery::PrunedTensor& pruned, const formats::TensorInfo* info,
                        v1::CompressionReport& report) {
  v1::TensorReport* out = report.add_tensors();
  out->set_name(pruned.name);
  uint64_t before = 1, after = 1;
  for (int64_t dim : pruned.shape_before) {
    out->add_shape(dim);
    before *= static_cast<uint64_t>(dim);
  }
  for (int64_t dim : pruned.shape_after) {
    out->add_shape_after(dim);
    after *= static_cast<uint64_t>(dim);
  }
  if (info != nullptr) out->set_dtype(std::string(tensor::DTypeName(info->dtype)));
  out->set_params(before);
  out->set_nonzero_after(after);
  out->set_sparsity(before ? 1.0 - double(after) / before : 0.0);
  out->set_method("structured");
  std::string removed;
  for (const auto& cut : pruned.cuts) {
    absl::StrAppend(&removed, removed.empty() ? "" : "; ", cut.removed.size(),
                    cut.input_channels ? " input" : "", " channels removed on axis ", cut.axis);
  }
  out->set_note(absl::StrCat("physical (", pruned.role, "): ", removed));
}

}  // namespace

bool IsPhysicalStructured(const MethodGroup& group) {
  return group.method != nullptr && group.method->removes_channels_from_graph();
}

absl::StatusOr<CompressionPlan> ApplyPhysicalPruning(const ValidatedSpec& spec,
                                                     formats::Model& model,
                                                     CompressionPlan plan,
                                                     v1::CompressionReport& report) {
  bool any = false;
  for (const MethodGroup& group : plan.groups) any |= IsPhysicalStructured(group);
  if (!any) return plan;
  formats::EditableGraph* graph = model.editable_graph();
  if (graph == nullptr) {
    return absl::InvalidArgumentError(
        "structured pruning in physical mode changes the graph, so it needs an ONNX model; "
        "for safetensors use structured_mode MASK (channels zeroed in place)");
  }

  absl::flat_hash_set<std::string> physical_names;
  uint64_t macs_before = 0, macs_after = 0;
  bool first = true;
  for (const MethodGroup& group : plan.groups) {
    if (!IsPhysicalStructured(group)) continue;
    absl::flat_hash_set<std::string> names;
    for (size_t index : group.tensors) names.insert(model.tensors()[index].name);
    physical_names.insert(names.begin(), names.end());

    surgery::ChannelPruningOptions options;
    options.fraction = group.config.sparsity;
    options.norm = group.config.norm;
    options.selected = [&names](const std::string& name) { return names.contains(name); };
    absl::StatusOr<surgery::ChannelPruningResult> result;
    if (auto s = graph->Edit([&](onnx::ModelProto& proto) {
          result = surgery::PruneChannelsPhysically(proto, options);
          return result.status();
        });
        !s.ok()) {
      return s;
    }

    for (const auto& pruned : result->tensors) {
      const formats::TensorInfo* info = nullptr;
      for (const auto& candidate : model.tensors()) {
        if (candidate.name == pruned.name) info = &candidate;
      }
      ReportPrunedTensor(pruned, info, report);
      report.mutable_tensors(report.tensors_size() - 1)->set_rule(group.rule_name);
    }
    for (const auto& note : result->notes) report.add_warnings(note);
    if (result->macs_per_position) {
      report.add_warnings("Conv MACs are counted per output position: the model's spatial "
                          "sizes are not known from shape inference");
    }
    if (first) {
      macs_before = result->macs_before;
      first = false;
    }
    macs_after = result->macs_after;
  }
  v1::Totals* totals = report.mutable_totals();
  totals->set_macs_before(macs_before);
  totals->set_macs_after(macs_after);

  // The graph changed: plan the remaining work against the new tensors and
  // leave the physically pruned ones alone.
  auto replanned = PlanCompression(spec, model.tensors());
  if (!replanned.ok()) return replanned.status();
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    const int group = replanned->group_of_tensor[i];
    if (group < 0) continue;
    if (IsPhysicalStructured(replanned->groups[group]) ||
        physical_names.contains(model.tensors()[i].name)) {
      replanned->group_of_tensor[i] = -1;
    }
  }
  for (MethodGroup& group : replanned->groups) {
    std::erase_if(group.tensors, [&](size_t i) { return replanned->group_of_tensor[i] < 0; });
  }
  return replanned;
}

}  // namespace bonsai::engine
