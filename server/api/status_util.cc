#include "server/api/status_util.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "server/engine/error_reason.h"

namespace bonsai::api {

namespace {

// A hint, not a promise: the server cannot know when a slot frees, and the
// client's RetryPolicy backs off from here.
constexpr int kBusyRetryAfterMs = 1000;

}  // namespace

grpc::Status ToGrpcStatus(const absl::Status& status, grpc::ServerContextBase* call) {
  if (status.ok()) return grpc::Status::OK;
  if (const std::optional<std::string> reason = engine::ReasonOf(status);
      reason.has_value() && call != nullptr) {
    call->AddTrailingMetadata("bonsai-error-reason", *reason);
    if (engine::IsBusyReason(*reason)) {
      call->AddTrailingMetadata("bonsai-retry-after-ms", absl::StrCat(kBusyRetryAfterMs));
    }
  }
  // absl and gRPC share the canonical code numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

}  // namespace bonsai::api
