#include "server/api/compressor_service.h"

#include "server/api/capabilities.h"
#include "server/api/compress_reactor.h"
#include "server/api/inspect_reactor.h"

namespace bonsai::api {

grpc::ServerBidiReactor<v1::CompressRequest, v1::CompressResponse>* CompressorService::Compress(
    grpc::CallbackServerContext* call) {
  return CompressReactor::Start(context_, call);
}

grpc::ServerReadReactor<v1::InspectRequest>* CompressorService::Inspect(
    grpc::CallbackServerContext* context, v1::InspectResponse* response) {
  return InspectReactor::Start(context_, context, response);
}

grpc::ServerUnaryReactor* CompressorService::GetCapabilities(
    grpc::CallbackServerContext* context, const v1::GetCapabilitiesRequest*,
    v1::Capabilities* response) {
  *response = DescribeCapabilities(context_);
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace bonsai::api
