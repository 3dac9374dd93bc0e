#include "server/engine/inspect_job.h"

#include "server/engine/error_reason.h"
#include "server/engine/job_plan.h"
#include "absl/container/flat_hash_set.h"
#include "server/formats/model.h"
#include "server/formats/model_set.h"

namespace bonsai::engine {

absl::StatusOr<v1::InspectResponse> RunInspectJob(const v1::InspectSpec& spec,
                                                  std::vector<formats::InputFile> files,
                                                  const CancellationToken& cancel) {
  auto include = CompilePatterns(spec.include(), "include");
  if (!include.ok()) return include.status();
  auto exclude = CompilePatterns(spec.exclude(), "exclude");
  if (!exclude.ok()) return exclude.status();

  uint64_t total_bytes = 0;
  absl::flat_hash_set<std::string> header_only;
  for (const auto& file : files) {
    total_bytes += file.size();
    if (file.header_only()) header_only.insert(file.name());
  }
  auto model = formats::OpenModelFiles(std::move(files));
  if (!model.ok()) return TagInvalidArgument(model.status(), ErrorReason::kInvalidModel);

  v1::InspectResponse response;
  response.set_format(std::string(formats::FormatName((*model)->format())));
  response.set_total_bytes(total_bytes);
  uint64_t total_params = 0, selected_params = 0;
  const auto& tensors = (*model)->tensors();
  tensor::FloatTensor values;  // one buffer for every tensor
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (auto s = cancel.CheckNotCancelled(); !s.ok()) return s;
    const formats::TensorInfo& info = tensors[i];
    v1::TensorInfo* out = response.add_tensors();
    out->set_name(info.name);
    for (int64_t dim : info.shape) out->add_shape(dim);
    out->set_dtype(std::string(tensor::DTypeName(info.dtype)));
    out->set_params(info.params);
    out->set_role(info.role);
    out->set_file(info.file);
    out->set_output_head(info.output_head);
    const bool selected = IsSelected(info, *include, *exclude, false);
    out->set_selected(selected);
    if (tensor::IsFloating(info.dtype) && !header_only.contains(info.file)) {
      out->set_zeros_known(true);
      if (auto s = (*model)->ReadInto(i, values); !s.ok()) return s;
      out->set_zeros(info.params - tensor::CountNonZero(values.span()));
    }
    total_params += info.params;
    if (selected) selected_params += info.params;
  }
  response.set_total_params(total_params);
  response.set_selected_params(selected_params);
  return response;
}

}  // namespace bonsai::engine
