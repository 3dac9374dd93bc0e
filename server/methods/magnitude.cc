#include "server/methods/magnitude.h"

namespace bonsai::methods {

void MagnitudeMethod::Observe(int pass, const WeightTensor& weight) {
  const auto values = weight.values->span();
  switch (pass) {
    case 0: global_count_ += values.size(); break;
    case 1: selector_->ObserveCoarse(values); break;
    case 2: selector_->ObserveFine(values); break;
  }
}

void MagnitudeMethod::EndPass(int pass) {
  switch (pass) {
    case 0:
      selector_ = std::make_unique<tensor::MagnitudeSelector>(
          tensor::PruneCount(config_.sparsity, global_count_));
      break;
    case 1: selector_->FinishCoarsePass(); break;
    case 2: masker_.emplace(selector_->FinishFinePass()); break;
  }
}

absl::StatusOr<MethodOutcome> MagnitudeMethod::Apply(const WeightTensor& weight,
                                                     const ProgressTick&) {
  auto values = weight.values->span();
  if (config_.scope == Scope::kGlobal) {
    if (!masker_) return absl::InternalError("global magnitude applied before its passes");
    masker_->Apply(values);
  } else {
    tensor::PruneSmallestMagnitudes(values, tensor::PruneCount(weight.sparsity, values.size()));
  }
  MethodOutcome outcome;
  outcome.packing.packing = formats::Packing::kSparseBitmask;
  return outcome;
}

}  // namespace bonsai::methods
