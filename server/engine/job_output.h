// A job's output files: the formats write them one after another into the
// spool, hashing as they go and handing 8 MiB frames to the zstd sizer; the
// handler streams each file from the spool as it grows, so the first output
// byte leaves while the job is still working and the job never waits for a
// slow reader. The report (per-file SHA-256, zstd size) is complete once the
// last file has ended.
#ifndef BONSAI_SERVER_ENGINE_JOB_OUTPUT_H_
#define BONSAI_SERVER_ENGINE_JOB_OUTPUT_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/output_digest.h"
#include "server/formats/model_files.h"

namespace bonsai::engine {

class JobOutput final : public formats::OutputSink {
 public:
  // `input_names` are the job's file names (outputs keep them); `on_change`
  // is called (no lock held) whenever there is something new to send;
  // `output_offset_bytes` is CompressionSpec.output_offset_bytes.
  JobOutput(storage::SpoolPlace place, std::vector<std::string> input_names,
            std::vector<uint64_t> input_sizes, std::function<void()> on_change,
            uint64_t output_offset_bytes = 0);
  ~JobOutput() override;

  // formats::OutputSink (the job's thread).
  absl::StatusOr<formats::OutputFileWriter*> BeginFile(size_t input_index,
                                                       std::string_view role) override;
  absl::Status EndFile() override;
  absl::StatusOr<std::shared_ptr<storage::SpoolFile>> Scratch(std::string name) override;

  // After the last EndFile: waits for the zstd sizes and returns the files'
  // reports and the total zstd size.
  absl::StatusOr<ZstdSize> ZstdBytes() { return zstd_.Total(); }
  std::vector<v1::FileReport> file_reports() const;
  uint64_t bytes_out() const;

  // The sender's view (any thread): the k-th file produced, if it exists yet.
  struct Produced {
    uint32_t input_index = 0;
    std::shared_ptr<const storage::SpoolFile> data;
  };
  std::optional<Produced> produced(size_t k) const;

 private:
  class Writer;

  const storage::SpoolPlace place_;
  const std::vector<std::string> names_;
  const std::vector<uint64_t> sizes_in_;
  const std::function<void()> on_change_;
  ZstdFrameSizer zstd_;
  std::unique_ptr<Writer> writer_;  // the file being written

  mutable absl::Mutex mu_;
  std::vector<Produced> produced_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::FileReport> reports_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_JOB_OUTPUT_H_
