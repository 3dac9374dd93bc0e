#include "server/formats/model_files.h"

#include "absl/strings/str_cat.h"

namespace bonsai::formats {

absl::Status InputFile::ReadAt(uint64_t offset, absl::Span<char> out) const {
  if (offset + out.size() > size_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a read of ", out.size(), " bytes at offset ", offset, " is past the end of ", name_,
        " (", size_, " bytes)"));
  }
  if (auto status = data_->WaitFor(offset + out.size(), wait_.cancelled, wait_.idle); !status.ok()) {
    if (header_only_ && absl::IsOutOfRange(status)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "only the first ", data_->size(), " bytes of ", name_,
          " were sent (header_only), fewer than its header needs; send the 8-byte length and "
          "the whole JSON header"));
    }
    return status;
  }
  return data_->ReadAt(offset, out);
}

absl::Status InputFile::WaitComplete() const {
  if (!header_only_) return data_->WaitFor(size_, wait_.cancelled, wait_.idle);
  // A header-only file is as long as the client made it: complete at its
  // half-close.
  absl::Status status = data_->WaitFor(UINT64_MAX, wait_.cancelled, wait_.idle);
  return absl::IsOutOfRange(status) ? absl::OkStatus() : status;
}

absl::StatusOr<std::string> InputFile::ReadAll() const {
  if (auto status = WaitComplete(); !status.ok()) return status;
  return data_->ReadAll();
}

absl::Status PassThrough(const InputFile& input, std::string_view role, OutputSink& sink) {
  if (auto status = input.WaitComplete(); !status.ok()) return status;
  auto writer = sink.BeginFile(input.index(), role);
  if (!writer.ok()) return writer.status();
  if (auto status = (*writer)->CopyFrom(input.data(), 0, input.size()); !status.ok()) {
    return status;
  }
  return sink.EndFile();
}

}  // namespace bonsai::formats
