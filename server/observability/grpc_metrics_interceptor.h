// gRPC server metrics under the names dashboards already chart
// (go-grpc-prometheus / grpc-ecosystem): grpc_server_started_total,
// grpc_server_handled_total, grpc_server_handling_seconds,
// grpc_server_msg_received_total and grpc_server_msg_sent_total, labelled by
// grpc_service, grpc_method, grpc_type (and grpc_code once handled).
//
// main.cc registers them once:
//   builder.experimental().SetInterceptorCreators(
//       bonsai::observability::MakeServerInterceptors());
#ifndef BONSAI_SERVER_OBSERVABILITY_GRPC_METRICS_INTERCEPTOR_H_
#define BONSAI_SERVER_OBSERVABILITY_GRPC_METRICS_INTERCEPTOR_H_

#include <memory>
#include <vector>

#include <grpcpp/support/server_interceptor.h>

namespace bonsai::observability {

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeServerInterceptors();

}  // namespace bonsai::observability

#endif  // BONSAI_SERVER_OBSERVABILITY_GRPC_METRICS_INTERCEPTOR_H_
