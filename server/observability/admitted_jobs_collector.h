// bonsai_jobs_admitted{stage}: every admitted job, from its admission to the
// end of its call, by where it is. Counted at scrape time from a source the
// server sets (the calls in progress), not kept by increments: a job's stage
// changes on three threads, and a count derived on read cannot drift.
#ifndef BONSAI_SERVER_OBSERVABILITY_ADMITTED_JOBS_COLLECTOR_H_
#define BONSAI_SERVER_OBSERVABILITY_ADMITTED_JOBS_COLLECTOR_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace bonsai::observability {

class AdmittedJobsCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_ADMITTED_JOBS_COLLECTOR_H_
