#include "server/observability/admitted_jobs_collector.h"

#include <string>

#include "absl/synchronization/mutex.h"
#include "prometheus/client_metric.h"
#include "prometheus/metric_type.h"
#include "server/observability/metrics.h"

namespace bonsai::observability {
namespace {

constexpr std::array<const char*, kAdmittedStageCount> kStageNames = {"receiving", "queued",
                                                                     "running", "sending"};

absl::Mutex source_mu(absl::kConstInit);
AdmittedJobsSource* source ABSL_GUARDED_BY(source_mu) = nullptr;

}  // namespace

void SetAdmittedJobsSource(AdmittedJobsSource counts) {
  absl::MutexLock lock(&source_mu);
  delete source;
  source = counts ? new AdmittedJobsSource(std::move(counts)) : nullptr;
}

std::vector<prometheus::MetricFamily> AdmittedJobsCollector::Collect() const {
  AdmittedJobCounts counts{};
  {
    // Held while counting, so that the server cannot unset (and destroy)
    // what the source reads in the middle of a scrape.
    absl::MutexLock lock(&source_mu);
    if (source != nullptr) counts = (*source)();
  }
  prometheus::MetricFamily family{
      "bonsai_jobs_admitted",
      "Admitted jobs by stage, from admission to the end of the call: receiving (upload not "
      "complete), queued (waiting for a core or memory), running (computing), sending (work "
      "done, output still streaming). All but sending hold a job slot.",
      prometheus::MetricType::Gauge,
      {}};
  for (size_t i = 0; i < kStageNames.size(); ++i) {
    prometheus::ClientMetric metric;
    metric.label.push_back({"stage", kStageNames[i]});
    metric.gauge.value = static_cast<double>(counts[i]);
    family.metric.push_back(std::move(metric));
  }
  return {std::move(family)};
}

}  // namespace bonsai::observability
