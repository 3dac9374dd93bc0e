// Limits and sizes the handlers enforce, set from the server's flags.
#ifndef BONSAI_SERVER_API_SERVICE_OPTIONS_H_
#define BONSAI_SERVER_API_SERVICE_OPTIONS_H_

#include <cstdint>
#include <string>

namespace bonsai::api {

struct ServiceOptions {
  uint64_t max_model_bytes = 4ull << 30;
  uint64_t max_calibration_bytes = 1ull << 30;
  uint64_t max_chunk_bytes = 4ull << 20;  // a request chunk
  uint64_t send_chunk_bytes = 1ull << 20;  // a response chunk
  uint64_t max_files = 4096;               // files in one job
  std::string spool_dir = "/tmp";          // uploads and outputs, unlinked files
  // No byte of an upload for this long ends the job (a stalled client).
  double receive_idle_timeout_seconds = 60;
  // A whole job, from admission to its last byte out; 0: no cap.
  double max_job_seconds = 3600;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_SERVICE_OPTIONS_H_
