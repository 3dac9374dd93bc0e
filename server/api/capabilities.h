// What GetCapabilities answers: formats, methods with their parameters (from
// the methods' own catalogue), and this server's limits.
#ifndef BONSAI_SERVER_API_CAPABILITIES_H_
#define BONSAI_SERVER_API_CAPABILITIES_H_

#include "bonsai/v1/compressor.pb.h"
#include "server/api/service_context.h"

namespace bonsai::api {

v1::Capabilities DescribeCapabilities(const ServiceContext& context);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_CAPABILITIES_H_
