// bonsai.v1.Compressor on gRPC's callback API. Each RPC has its own handler
// (compress_reactor, inspect_reactor, capabilities); this class only routes.
#ifndef BONSAI_SERVER_API_COMPRESSOR_SERVICE_H_
#define BONSAI_SERVER_API_COMPRESSOR_SERVICE_H_

#include "bonsai/v1/compressor.grpc.pb.h"
#include "server/api/service_context.h"

namespace bonsai::api {

class CompressorService final : public v1::Compressor::CallbackService {
 public:
  explicit CompressorService(const ServiceContext& context) : context_(context) {}

  grpc::ServerBidiReactor<v1::CompressRequest, v1::CompressResponse>* Compress(
      grpc::CallbackServerContext* context) override;
  grpc::ServerReadReactor<v1::InspectRequest>* Inspect(grpc::CallbackServerContext* context,
                                                       v1::InspectResponse* response) override;
  grpc::ServerUnaryReactor* GetCapabilities(grpc::CallbackServerContext* context,
                                            const v1::GetCapabilitiesRequest* request,
                                            v1::Capabilities* response) override;

 private:
  ServiceContext context_;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_COMPRESSOR_SERVICE_H_
