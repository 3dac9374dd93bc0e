// What a call's absl::Status becomes at the edge: the gRPC status (with its
// reason) the client sees, and the outcome bonsai_jobs_total counts.
#ifndef BONSAI_SERVER_API_STATUS_UTIL_H_
#define BONSAI_SERVER_API_STATUS_UTIL_H_

#include <grpcpp/server_context.h>
#include <grpcpp/support/status.h>

#include <string_view>

#include "absl/status/status.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

// Also puts the status's reason (engine/error_reason.h), if it has one, in
// the call's trailing metadata: `bonsai-error-reason`, and for a busy server
// `bonsai-retry-after-ms`. Call it right before Finish.
grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContextBase* call);

// How a finished job call is counted: its status becomes one of the outcomes
// of bonsai_jobs_total.
observability::JobOutcome OutcomeOf(const absl::Status& status);
void RecordCallOutcome(std::string_view method, std::string_view format,
                       const absl::Status& status);

// Runs `work` (returning absl::Status or absl::StatusOr) and turns an
// exception into a status: nothing may escape a gRPC reaction or a worker,
// or the call is never answered and shutdown hangs. bad_alloc is the one
// expected (a large allocation under a memory limit).
template <typename Work>
auto Guarded(Work&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        "the server ran out of memory for this job; retry later, on another replica, or on a "
        "server with a larger memory limit (--max_memory_bytes)");
  } catch (const std::exception& error) {
    return absl::InternalError(absl::StrCat("unexpected error: ", error.what()));
  }
}

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_STATUS_UTIL_H_
