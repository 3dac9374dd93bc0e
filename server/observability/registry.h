// The one Prometheus registry every bonsai metric lives in. Internal to
// observability/: handlers and the engine use metrics.h, never this.
#ifndef BONSAI_SERVER_OBSERVABILITY_REGISTRY_H_
#define BONSAI_SERVER_OBSERVABILITY_REGISTRY_H_

#include <memory>

#include "prometheus/registry.h"

namespace bonsai::observability {

// Created on first use, so metrics recorded before the endpoint starts (or in
// tests that never start it) are kept.
const std::shared_ptr<prometheus::Registry>& MetricsRegistry();

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_REGISTRY_H_
