// How a finished job call is counted: its status becomes one of the
// outcomes of bonsai_jobs_total.
#ifndef BONSAI_SERVER_API_CALL_OUTCOME_H_
#define BONSAI_SERVER_API_CALL_OUTCOME_H_

#include <string_view>

#include "absl/status/status.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

observability::JobOutcome OutcomeOf(const absl::Status& status);
void RecordCallOutcome(std::string_view method, std::string_view format,
                       const absl::Status& status);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_CALL_OUTCOME_H_
