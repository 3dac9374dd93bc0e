// Collects one uploaded file (model or calibration) from stream chunks and
// refuses it as soon as it passes its limit, without buffering the rest.
#ifndef BONSAI_SERVER_API_UPLOAD_BUFFER_H_
#define BONSAI_SERVER_API_UPLOAD_BUFFER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"

namespace bonsai::api {

class UploadBuffer {
 public:
  // `what` names the upload in messages ("model", "calibration data");
  // `flag` names the server flag that sets the limit.
  UploadBuffer(std::string what, std::string flag, uint64_t limit)
      : what_(std::move(what)), flag_(std::move(flag)), limit_(limit) {}

  // Checks a declared size against the limit and reserves room for it, so
  // the buffer never has to grow (and briefly double) while receiving.
  absl::Status Declare(uint64_t declared_bytes);
  absl::Status Append(std::string_view chunk);
  // After the client half-closed: the bytes received match the declaration.
  absl::Status CheckComplete() const;

  uint64_t size() const { return bytes_.size(); }
  uint64_t declared() const { return declared_; }
  std::string Take() { return std::move(bytes_); }

 private:
  std::string what_, flag_;
  uint64_t limit_;
  uint64_t declared_ = 0;
  std::string bytes_;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_UPLOAD_BUFFER_H_
