#include "server/engine/global_exchange.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "server/methods/method.h"
#include "server/tensor/magnitude_cut.h"
#include "server/tensor/magnitude_histogram.h"

namespace bonsai::engine {
namespace {

struct ExchangedGroup {
  MethodGroup* group;
  methods::SettleableGlobalCut* method;
  tensor::MagnitudeHistogram histogram = tensor::MagnitudeHistogram::Coarse();
};

std::vector<ExchangedGroup> GlobalMagnitudeGroups(CompressionPlan& plan) {
  std::vector<ExchangedGroup> groups;
  for (MethodGroup& group : plan.groups) {
    if (auto* method = group.method->settleable_global_cut()) groups.push_back({&group, method});
  }
  return groups;
}

// Adds every tensor of every group to its histogram, one tensor in memory.
absl::Status Histogram(formats::Model& model, std::vector<ExchangedGroup>& groups,
                       CoreGate* cores, const CancellationToken& cancel) {
  tensor::FloatTensor values;
  for (ExchangedGroup& exchanged : groups) {
    for (size_t index : exchanged.group->tensors) {
      if (auto s = cancel.CheckNotCancelled(); !s.ok()) return s;
      if (auto s = model.ReadInto(index, values); !s.ok()) return s;
      std::unique_ptr<CoreLease> core;
      if (cores != nullptr) {
        auto lease = cores->AcquireCore([&cancel] { return cancel.cancelled(); });
        if (!lease.ok()) return lease.status();
        core = *std::move(lease);
      }
      exchanged.histogram.Add(values.span());
    }
  }
  return absl::OkStatus();
}

v1::GlobalSummary Summarize(uint32_t phase, const std::vector<ExchangedGroup>& groups) {
  v1::GlobalSummary summary;
  summary.set_phase(phase);
  std::vector<uint32_t> values;
  std::vector<uint64_t> counts;
  for (const ExchangedGroup& exchanged : groups) {
    v1::GlobalGroupSummary* group = summary.add_groups();
    group->set_rule(exchanged.group->rule_index);
    group->set_sparsity(exchanged.group->config.sparsity);
    group->set_weights(exchanged.histogram.total());
    exchanged.histogram.ExportSparse(values, counts);
    group->mutable_values()->Add(values.begin(), values.end());
    group->mutable_counts()->Add(counts.begin(), counts.end());
  }
  return summary;
}

absl::Status Invalid(uint32_t phase, const std::string& what) {
  return absl::InvalidArgumentError(
      absl::StrCat("global_decision of phase ", phase, ": ", what,
                   "; answer each GlobalSummary with one decision per group, in its order"));
}

absl::StatusOr<v1::GlobalDecision> Round(uint32_t phase, const std::vector<ExchangedGroup>& groups,
                                         GlobalCutExchange& exchange) {
  auto decision = exchange.Exchange(Summarize(phase, groups));
  if (!decision.ok()) return decision.status();
  if (decision->phase() != phase) {
    return Invalid(phase, absl::StrCat("it says phase ", decision->phase()));
  }
  if (decision->groups_size() != static_cast<int>(groups.size())) {
    return Invalid(phase, absl::StrCat("it holds ", decision->groups_size(),
                                       " groups, the summary ", groups.size()));
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    if (decision->groups(g).rule() != groups[g].group->rule_index) {
      return Invalid(phase, absl::StrCat("group ", g, " is rule ", decision->groups(g).rule(),
                                         ", the summary's is rule ",
                                         groups[g].group->rule_index));
    }
  }
  return decision;
}

}  // namespace

absl::Status SettleGlobalCutsWithClient(formats::Model& model, CompressionPlan& plan,
                                        GlobalCutExchange& exchange, CoreGate* cores,
                                        const CancellationToken& cancel) {
  std::vector<ExchangedGroup> groups = GlobalMagnitudeGroups(plan);
  if (auto s = Histogram(model, groups, cores, cancel); !s.ok()) return s;
  auto buckets = Round(1, groups, exchange);
  if (!buckets.ok()) return buckets.status();

  for (size_t g = 0; g < groups.size(); ++g) {
    const uint32_t bucket = buckets->groups(g).bucket();
    if (bucket >= (1u << 15)) {
      return Invalid(1, absl::StrCat("bucket ", bucket, " is not the high 16 bits of a |w|"));
    }
    groups[g].histogram = tensor::MagnitudeHistogram::Fine(bucket);
  }
  if (auto s = Histogram(model, groups, cores, cancel); !s.ok()) return s;
  auto cuts = Round(2, groups, exchange);
  if (!cuts.ok()) return cuts.status();

  for (size_t g = 0; g < groups.size(); ++g) {
    const v1::GlobalGroupDecision& cut = cuts->groups(g);
    if (cut.prune_nothing()) {
      groups[g].method->SettleCut(tensor::MagnitudeCut::Nothing());
      continue;
    }
    const uint32_t bucket = buckets->groups(g).bucket();
    if ((cut.threshold_bits() >> 16) != bucket) {
      return Invalid(2, absl::StrCat("threshold_bits ", cut.threshold_bits(),
                                     " is outside the decided bucket ", bucket));
    }
    const uint64_t equal = groups[g].histogram.count(cut.threshold_bits() & 0xffffu);
    if (cut.ties_to_prune() > equal) {
      return Invalid(2, absl::StrCat("ties_to_prune ", cut.ties_to_prune(), " exceeds the ",
                                     equal, " weights of this job equal to the threshold"));
    }
    groups[g].method->SettleCut({cut.threshold_bits(), cut.ties_to_prune(), false});
  }
  return absl::OkStatus();
}

}  // namespace bonsai::engine
