// Collects one job's upload (the model's declared files and the optional
// calibration file) from stream chunks straight into the spool, refusing it
// as soon as it breaks a limit, without buffering the rest. Nothing is
// allocated for a declared size: the spool file grows as bytes arrive.
#ifndef BONSAI_SERVER_API_UPLOAD_FILES_H_
#define BONSAI_SERVER_API_UPLOAD_FILES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "bonsai/v1/compressor.pb.h"
#include "google/protobuf/repeated_field.h"
#include "server/api/service_options.h"
#include "server/formats/model_files.h"
#include "server/storage/byte_budget.h"
#include "server/storage/spool_file.h"

namespace bonsai::api {

class UploadFiles {
 public:
  explicit UploadFiles(const ServiceOptions& options) : options_(options) {}
  ~UploadFiles();  // fails files still open, so a waiting job wakes up

  // Checks the declared files (names, sizes, count) against the limits,
  // takes their spool room (inputs and outputs) from `memory_spool` if it has
  // room now (may be null), else from the disk `spool`, and creates their
  // spool files there. `allow_header_only` for Inspect.
  absl::Status Declare(const google::protobuf::RepeatedPtrField<v1::FileDeclaration>& files,
                       uint64_t calibration_bytes, storage::ByteBudget& spool,
                       storage::ByteBudget* memory_spool, bool allow_header_only);
  // Where this job's files are: its outputs go to the same place.
  const storage::SpoolPlace& place() const { return place_; }

  absl::Status AcceptFileChunk(const v1::FileChunk& chunk);
  absl::Status AcceptCalibrationChunk(const std::string& chunk);

  // At the client's half-close: every file has its declared bytes; they
  // are marked complete. Otherwise the files fail with the returned status.
  absl::Status Complete();
  // Wakes a job waiting for bytes that will never come.
  void Fail(const absl::Status& why);

  uint64_t model_bytes() const { return model_bytes_; }        // the model's files
  uint64_t declared_bytes() const { return declared_bytes_; }  // and the calibration
  uint64_t received_bytes() const { return received_bytes_; }
  std::vector<std::string> names() const;
  std::vector<uint64_t> sizes() const;

  // How a job waits for these files: until `cancelled()`, or until the
  // upload sends nothing for --receive_idle_timeout_seconds.
  formats::WaitPolicy Wait(std::function<bool()> cancelled) const;
  std::vector<formats::InputFile> InputFiles(const formats::WaitPolicy& wait) const;
  std::optional<formats::InputFile> Calibration(const formats::WaitPolicy& wait) const;

 private:
  struct Upload {
    v1::FileDeclaration declaration;
    std::shared_ptr<storage::SpoolFile> data;
  };
  absl::Status Append(Upload& upload, const std::string& chunk, const std::string& what);

  const ServiceOptions& options_;
  std::vector<Upload> files_;
  std::optional<Upload> calibration_;
  std::unique_ptr<storage::Reservation> spool_room_;
  storage::SpoolPlace place_;
  uint64_t model_bytes_ = 0;
  uint64_t declared_bytes_ = 0;
  uint64_t received_bytes_ = 0;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_UPLOAD_FILES_H_
