// Why a call failed, as a word a client can branch on without parsing the
// message: the server sends it beside the gRPC status (trailing metadata
// `bonsai-error-reason`), and the Python client raises a matching exception
// (InvalidSpec, InvalidModel, ModelTooLarge, ServerBusy, ServerUnavailable).
// The reason travels inside the absl::Status as a payload, so it survives
// being passed up through the layers unchanged.
#ifndef BONSAI_SERVER_ENGINE_ERROR_REASON_H_
#define BONSAI_SERVER_ENGINE_ERROR_REASON_H_

#include <optional>
#include <string>

#include "absl/status/status.h"

namespace bonsai::engine {

enum class ErrorReason {
  kInvalidSpec,    // the request: fix the spec, rules or recipe
  kInvalidModel,   // the model or calibration bytes: fix the file
  kModelTooLarge,  // over a limit of this server: never fits, retrying does not help
  kQueueFull,      // every job slot taken: retry later or elsewhere
  kPeerLimit,      // this client already has its share of slots
  kSpoolFull,      // no spool room now
  kShuttingDown,   // draining: retry on another replica at once
};

// The wire name, e.g. "QUEUE_FULL".
const char* ErrorReasonName(ErrorReason reason);

// `status` tagged with `reason`; an OK status, or one already tagged (the
// site closest to the cause knows best), is returned unchanged.
absl::Status WithReason(absl::Status status, ErrorReason reason);

// The same, but only for INVALID_ARGUMENT: a parser or planner may also fail
// for the server's own reasons (a spool read, memory), which are not the
// client's file or spec.
absl::Status TagInvalidArgument(absl::Status status, ErrorReason reason);

// The wire name of the reason `status` carries, if any.
std::optional<std::string> ReasonOf(const absl::Status& status);

// Whether a reason's wire name means "busy now": retry after a pause.
bool IsBusyReason(const std::string& name);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_ERROR_REASON_H_
