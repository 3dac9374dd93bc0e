// A file in the spool: the bytes of one uploaded or produced file, on disk
// rather than in anonymous memory, so a job's memory does not grow with its
// model. One writer appends; readers read any range that has been written,
// waiting for bytes still to come. The file is unlinked from its creation
// (O_TMPFILE), so nothing is left on disk when the job ends, however it ends,
// even if the process is killed.
#ifndef BONSAI_SERVER_STORAGE_SPOOL_FILE_H_
#define BONSAI_SERVER_STORAGE_SPOOL_FILE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace bonsai::storage {

// When any file of one upload last received a byte: a client may send the
// files one after another, so a file that waits for its turn is not stalled
// while the upload as a whole moves.
class UploadActivity {
 public:
  void Touch() { last_ = absl::ToUnixNanos(absl::Now()); }
  absl::Time last() const { return absl::FromUnixNanos(last_.load()); }

 private:
  std::atomic<int64_t> last_{absl::ToUnixNanos(absl::Now())};
};

class SpoolFile;

// Where one job's spool files live: the spool folder on disk, or anonymous
// memory (memfd) when the job fits the memory spool (--memory_spool_bytes).
// Either way a file is an fd read with positional reads, and nothing is left
// behind when the job ends.
struct SpoolPlace {
  std::string dir;         // when !in_memory
  bool in_memory = false;
  absl::StatusOr<std::shared_ptr<SpoolFile>> Create(std::string name) const;
};

class SpoolFile {
 public:
  // Creates an empty, unlinked file in `dir`.
  static absl::StatusOr<std::shared_ptr<SpoolFile>> Create(const std::string& dir,
                                                           std::string name);
  // The same in anonymous memory (memfd): the memory spool, scratch copies.
  static absl::StatusOr<std::shared_ptr<SpoolFile>> CreateInMemory(std::string name);
  ~SpoolFile();
  SpoolFile(const SpoolFile&) = delete;
  SpoolFile& operator=(const SpoolFile&) = delete;

  const std::string& name() const { return name_; }

  // Writer side. Append never blocks on readers.
  absl::Status Append(std::string_view bytes);
  // Every byte is written: readers waiting past the end get OUT_OF_RANGE.
  void Complete();
  // The writer gave up (upload cut, job failed): waiting readers get `why`.
  void Fail(const absl::Status& why);
  // Called (with no lock held) after each Append/Complete/Fail: the sender
  // of an output file uses it to wake up. Set before the first Append.
  void set_on_change(std::function<void()> on_change) { on_change_ = std::move(on_change); }
  // Shares an upload-wide clock: each Append touches it, and WaitFor's idle
  // timeout counts from the upload's last byte, not this file's.
  void set_activity(std::shared_ptr<UploadActivity> activity) { activity_ = std::move(activity); }

  // Reader side.
  uint64_t size() const;     // bytes written so far
  bool complete() const;
  // Waits until [0, end) is written. OUT_OF_RANGE when the file completed
  // shorter, the writer's failure when it failed, DEADLINE_EXCEEDED when no
  // byte arrived for `idle` (in this file or, with an activity clock, in
  // any file of its upload: the writer stalled), and CANCELLED when
  // `cancelled()` turns true (polled a few times a second).
  absl::Status WaitFor(uint64_t end, const std::function<bool()>& cancelled,
                       absl::Duration idle = absl::InfiniteDuration()) const;
  // Reads bytes already written (positional read; any thread).
  absl::Status ReadAt(uint64_t offset, absl::Span<char> out) const;
  absl::StatusOr<std::string> ReadAll() const;  // for files kept whole (ONNX graphs, small files)

 private:
  SpoolFile(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  void Changed();

  const int fd_;
  const std::string name_;
  std::function<void()> on_change_;
  std::shared_ptr<UploadActivity> activity_;
  mutable absl::Mutex mu_;
  uint64_t size_ ABSL_GUARDED_BY(mu_) = 0;
  bool complete_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);
};

}  // namespace bonsai::storage

#endif  // BONSAI_SERVER_STORAGE_SPOOL_FILE_H_
