#include "server/methods/magnitude.h"

namespace bonsai::methods {

void MagnitudeMethod::Observe(int pass, const WeightTensor& weight) {
  selector_.Observe(pass, weight.values->span());
}

void MagnitudeMethod::EndPass(int pass) {
  if (pass == 0) selector_.set_k(tensor::PruneCount(config_.sparsity, selector_.observed()));
  selector_.FinishPass(pass);
  if (selector_.cut()) masker_.emplace(*selector_.cut());
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
