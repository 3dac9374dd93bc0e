#include "server/methods/magnitude.h"

namespace bonsai::methods {

void MagnitudeMethod::Observe(int pass, const WeightTensor& weight) {
  const auto values = weight.values->span();
  if (!selector_) selector_ = std::make_unique<tensor::MagnitudeSelector>(0);
  switch (pass) {
    case 0: selector_->ObserveCoarse(values); break;
    case 1: selector_->ObserveFine(values); break;
  }
}

void MagnitudeMethod::EndPass(int pass) {
  if (!selector_) selector_ = std::make_unique<tensor::MagnitudeSelector>(0);  // no tensors
  switch (pass) {
    case 0:
      selector_->set_k(tensor::PruneCount(config_.sparsity, selector_->observed()));
      selector_->FinishCoarsePass();
      break;
    case 1: masker_.emplace(selector_->FinishFinePass()); break;
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
