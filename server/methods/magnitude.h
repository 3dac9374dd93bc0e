// Magnitude pruning: the round(sparsity * n) weights with the smallest |w|
// become zero, per tensor (layer scope) or over all tensors of the group with
// one threshold (global scope). Same masks as torch.nn.utils.prune's
// l1_unstructured / global_unstructured(L1Unstructured), up to ties.
#ifndef BONSAI_SERVER_METHODS_MAGNITUDE_H_
#define BONSAI_SERVER_METHODS_MAGNITUDE_H_

#include <optional>

#include "server/methods/method.h"
#include "server/tensor/magnitude_select.h"

namespace bonsai::methods {

class MagnitudeMethod : public Method, private SettleableGlobalCut {
 public:
  explicit MagnitudeMethod(const MethodConfig& config) : config_(config) {}

  int observation_passes() const override {
    return config_.scope == Scope::kGlobal ? tensor::MagnitudeSelector::kMaxPasses : 0;
  }
  bool NeedsPass(int pass) const override { return !masker_ && selector_.NeedsPass(pass); }
  void Observe(int pass, const WeightTensor& weight) override;
  void EndPass(int pass) override;
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

  SettleableGlobalCut* settleable_global_cut() override {
    return config_.scope == Scope::kGlobal ? this : nullptr;
  }

 private:
  // Global scope: a cut settled elsewhere (over several jobs, see
  // engine/global_exchange.h) replaces the observation passes.
  void SettleCut(const tensor::MagnitudeCut& cut) override { masker_.emplace(cut); }

  MethodConfig config_;
  // Global scope: the selector's passes (magnitude_select.h); the first
  // also counts the weights, which settles k.
  tensor::MagnitudeSelector selector_;
  std::optional<tensor::MagnitudeMasker> masker_;
};

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_MAGNITUDE_H_
