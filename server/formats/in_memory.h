// Models from bytes in memory and their output as one string: for unit
// tests and benchmarks, which work on small models without a job or spool.
#ifndef BONSAI_SERVER_FORMATS_IN_MEMORY_H_
#define BONSAI_SERVER_FORMATS_IN_MEMORY_H_

#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/formats/model.h"
#include "server/formats/model_files.h"

namespace bonsai::formats {

// A complete input file holding `bytes` (in anonymous memory).
absl::StatusOr<InputFile> InMemoryFile(std::string name, std::string_view bytes,
                                       size_t index = 0);

// The same for a file known to be safetensors or ONNX.
absl::StatusOr<std::unique_ptr<Model>> ParseSafetensors(std::string bytes);
absl::StatusOr<std::unique_ptr<Model>> ParseOnnx(std::string bytes);

// Collects output files as strings, by input index.
class MemorySink final : public OutputSink {
 public:
  MemorySink();
  ~MemorySink() override;
  absl::StatusOr<OutputFileWriter*> BeginFile(size_t input_index, std::string_view role) override;
  absl::Status EndFile() override;
  absl::StatusOr<std::shared_ptr<storage::SpoolFile>> Scratch(std::string name) override;

  std::map<size_t, std::string>& files() { return files_; }

 private:
  class Writer;
  std::map<size_t, std::string> files_;
  std::unique_ptr<Writer> writer_;
};

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_IN_MEMORY_H_
