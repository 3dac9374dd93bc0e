// Limits and sizes the handlers enforce, set from the server's flags.
#ifndef BONSAI_SERVER_API_SERVICE_OPTIONS_H_
#define BONSAI_SERVER_API_SERVICE_OPTIONS_H_

#include <cstdint>

namespace bonsai::api {

struct ServiceOptions {
  uint64_t max_model_bytes = 4ull << 30;
  uint64_t max_calibration_bytes = 1ull << 30;
  uint64_t max_chunk_bytes = 4ull << 20;  // a request chunk
  uint64_t send_chunk_bytes = 1ull << 20;  // a response chunk
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_SERVICE_OPTIONS_H_
