#include "server/engine/job_output.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace bonsai::engine {

class JobOutput::Writer final : public formats::OutputFileWriter {
 public:
  Writer(std::shared_ptr<storage::SpoolFile> file, ZstdFrameSizer& zstd)
      : file_(std::move(file)), zstd_(zstd) {}

  absl::Status Write(std::string_view bytes) override {
    if (auto status = file_->Append(bytes); !status.ok()) return status;
    sha_.Update(bytes);
    QueueFullFrames();
    return absl::OkStatus();
  }

  // Copies through a fixed buffer: a multi-GB unchanged range costs 4 MiB.
  absl::Status CopyFrom(const storage::SpoolFile& source, uint64_t offset,
                        uint64_t length) override {
    constexpr uint64_t kPiece = 4 << 20;
    buffer_.resize(std::min(length, kPiece));
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min(kPiece, length - done);
      if (auto s = source.ReadAt(offset + done, absl::MakeSpan(buffer_.data(), n)); !s.ok()) {
        return s;
      }
      if (auto s = Write(std::string_view(buffer_.data(), n)); !s.ok()) return s;
      done += n;
    }
    return absl::OkStatus();
  }

  // Queues the last partial frame, completes the file; the file's SHA-256.
  std::string Finish() {
    const uint64_t size = file_->size();
    if (size > framed_ || size == 0) zstd_.Add(file_, framed_, size - framed_);
    framed_ = size;
    file_->Complete();
    return sha_.FinishHex();
  }

  const std::shared_ptr<storage::SpoolFile>& file() const { return file_; }

 private:
  void QueueFullFrames() {
    while (file_->size() - framed_ >= kZstdFrameBytes) {
      zstd_.Add(file_, framed_, kZstdFrameBytes);
      framed_ += kZstdFrameBytes;
    }
  }

  std::shared_ptr<storage::SpoolFile> file_;
  ZstdFrameSizer& zstd_;
  Sha256 sha_;
  uint64_t framed_ = 0;
  std::string buffer_;
};

JobOutput::JobOutput(storage::SpoolPlace place, std::vector<std::string> input_names,
                     std::vector<uint64_t> input_sizes, std::function<void()> on_change,
                     uint64_t output_offset_bytes)
    : place_(std::move(place)),
      names_(std::move(input_names)),
      sizes_in_(std::move(input_sizes)),
      on_change_(std::move(on_change)),
      zstd_(output_offset_bytes) {}

JobOutput::~JobOutput() = default;

absl::StatusOr<formats::OutputFileWriter*> JobOutput::BeginFile(size_t input_index,
                                                                std::string_view role) {
  if (writer_) return absl::FailedPreconditionError("an output file is already open");
  if (input_index >= names_.size()) {
    return absl::InternalError(absl::StrCat("output for file ", input_index, " of ", names_.size()));
  }
  auto file = place_.Create(names_[input_index]);
  if (!file.ok()) return file.status();
  (*file)->set_on_change(on_change_);
  writer_ = std::make_unique<Writer>(*file, zstd_);
  {
    absl::MutexLock lock(&mu_);
    for (const v1::FileReport& report : reports_) {
      if (report.name() == names_[input_index]) {
        return absl::InternalError(absl::StrCat(names_[input_index], " was written twice"));
      }
    }
    produced_.push_back({static_cast<uint32_t>(input_index), *file});
    v1::FileReport& report = reports_.emplace_back();
    report.set_name(names_[input_index]);
    report.set_role(std::string(role));
    report.set_bytes_in(sizes_in_[input_index]);
  }
  if (on_change_) on_change_();
  return writer_.get();
}

absl::Status JobOutput::EndFile() {
  if (!writer_) return absl::FailedPreconditionError("no output file is open");
  const uint64_t size = writer_->file()->size();
  std::string sha = writer_->Finish();  // completes the file: the sender may end it
  {
    absl::MutexLock lock(&mu_);
    reports_.back().set_bytes_out(size);
    reports_.back().set_sha256(std::move(sha));
  }
  writer_.reset();
  if (on_change_) on_change_();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<storage::SpoolFile>> JobOutput::Scratch(std::string name) {
  return place_.Create(std::move(name));
}

std::vector<v1::FileReport> JobOutput::file_reports() const {
  absl::MutexLock lock(&mu_);
  return reports_;
}

uint64_t JobOutput::bytes_out() const {
  absl::MutexLock lock(&mu_);
  uint64_t total = 0;
  for (const auto& report : reports_) total += report.bytes_out();
  return total;
}

std::optional<JobOutput::Produced> JobOutput::produced(size_t k) const {
  absl::MutexLock lock(&mu_);
  if (k >= produced_.size()) return std::nullopt;
  return produced_[k];
}

}  // namespace bonsai::engine
