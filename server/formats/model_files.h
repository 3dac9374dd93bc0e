// The files a job carries, as the formats see them: inputs that may still be
// arriving (a read waits for its bytes, so a format can work on the first
// tensors of a model while the rest uploads), and a sink that takes output
// files one after another, so each can stream out as soon as it is final.
#ifndef BONSAI_SERVER_FORMATS_MODEL_FILES_H_
#define BONSAI_SERVER_FORMATS_MODEL_FILES_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "server/storage/spool_file.h"

namespace bonsai::formats {

// How long a read may wait for bytes still uploading.
struct WaitPolicy {
  std::function<bool()> cancelled;                // polled while waiting
  absl::Duration idle = absl::InfiniteDuration();  // no new byte for this long: give up
};

class InputFile {
 public:
  InputFile(size_t index, std::string name, uint64_t size,
            std::shared_ptr<const storage::SpoolFile> data, WaitPolicy wait,
            bool header_only = false)
      : index_(index), name_(std::move(name)), size_(size), data_(std::move(data)),
        wait_(std::move(wait)), header_only_(header_only) {}

  size_t index() const { return index_; }  // in the job's file list
  const std::string& name() const { return name_; }
  uint64_t size() const { return size_; }  // declared: the whole file
  bool header_only() const { return header_only_; }
  const storage::SpoolFile& data() const { return *data_; }

  // Waits until the range has arrived, then reads it.
  absl::Status ReadAt(uint64_t offset, absl::Span<char> out) const;
  // The whole file (waits for its last byte): for files parsed whole.
  absl::StatusOr<std::string> ReadAll() const;
  // Waits for the whole file without reading it.
  absl::Status WaitComplete() const;
  // Waits until [0, end) has arrived.
  absl::Status WaitFor(uint64_t end) const { return data_->WaitFor(end, wait_.cancelled, wait_.idle); }

 private:
  size_t index_;
  std::string name_;
  uint64_t size_;
  std::shared_ptr<const storage::SpoolFile> data_;
  WaitPolicy wait_;
  bool header_only_;
};

// One output file being written; bytes are final as soon as they are written.
class OutputFileWriter {
 public:
  virtual ~OutputFileWriter() = default;
  virtual absl::Status Write(std::string_view bytes) = 0;
  // Copies a range of an input (or scratch) file, unchanged.
  virtual absl::Status CopyFrom(const storage::SpoolFile& file, uint64_t offset,
                                uint64_t length) = 0;
};

class OutputSink {
 public:
  virtual ~OutputSink() = default;
  // Starts the output that replaces input file `input_index` (same name).
  // One file at a time: EndFile before the next BeginFile. `role` is
  // "model", "external_data", "index" or "other" (for the report).
  virtual absl::StatusOr<OutputFileWriter*> BeginFile(size_t input_index,
                                                      std::string_view role) = 0;
  virtual absl::Status EndFile() = 0;
  // A private spool file for bytes a format must hold back (e.g. packed
  // tensors, whose header can only be written once every tensor is known).
  virtual absl::StatusOr<std::shared_ptr<storage::SpoolFile>> Scratch(std::string name) = 0;
};

// Copies a whole input file to the sink unchanged, as one output file.
absl::Status PassThrough(const InputFile& input, std::string_view role, OutputSink& sink);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_MODEL_FILES_H_
