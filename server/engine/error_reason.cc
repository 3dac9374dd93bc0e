#include "server/engine/error_reason.h"

#include "absl/strings/cord.h"

namespace bonsai::engine {
namespace {

constexpr char kPayloadUrl[] = "type.bonsai.dev/bonsai.v1.ErrorReason";

}  // namespace

const char* ErrorReasonName(ErrorReason reason) {
  switch (reason) {
    case ErrorReason::kInvalidSpec: return "INVALID_SPEC";
    case ErrorReason::kInvalidModel: return "INVALID_MODEL";
    case ErrorReason::kModelTooLarge: return "MODEL_TOO_LARGE";
    case ErrorReason::kQueueFull: return "QUEUE_FULL";
    case ErrorReason::kPeerLimit: return "PEER_LIMIT";
    case ErrorReason::kSpoolFull: return "SPOOL_FULL";
    case ErrorReason::kShuttingDown: return "SHUTTING_DOWN";
  }
  return "UNKNOWN";
}

absl::Status WithReason(absl::Status status, ErrorReason reason) {
  if (status.ok() || status.GetPayload(kPayloadUrl).has_value()) return status;
  status.SetPayload(kPayloadUrl, absl::Cord(ErrorReasonName(reason)));
  return status;
}

absl::Status TagInvalidArgument(absl::Status status, ErrorReason reason) {
  if (!absl::IsInvalidArgument(status)) return status;
  return WithReason(std::move(status), reason);
}

std::optional<std::string> ReasonOf(const absl::Status& status) {
  const auto payload = status.GetPayload(kPayloadUrl);  // absl::optional in this Abseil
  if (!payload.has_value()) return std::nullopt;
  return std::string(*payload);
}

bool IsBusyReason(const std::string& name) {
  for (ErrorReason busy : {ErrorReason::kQueueFull, ErrorReason::kPeerLimit, ErrorReason::kSpoolFull}) {
    if (name == ErrorReasonName(busy)) return true;
  }
  return false;
}

}  // namespace bonsai::engine
