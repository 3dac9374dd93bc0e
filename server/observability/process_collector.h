// Process metrics under the names of Prometheus's standard process collector
// (process_resident_memory_bytes, process_cpu_seconds_total, ...), read from
// /proc at scrape time so they cost nothing between scrapes.
#ifndef BONSAI_SERVER_OBSERVABILITY_PROCESS_COLLECTOR_H_
#define BONSAI_SERVER_OBSERVABILITY_PROCESS_COLLECTOR_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace bonsai::observability {

class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_PROCESS_COLLECTOR_H_
