// The one place where internal absl::Status becomes a gRPC status.
#ifndef BONSAI_SERVER_API_STATUS_UTIL_H_
#define BONSAI_SERVER_API_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace bonsai::api {

grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_STATUS_UTIL_H_
