#include "server/api/upload_files.h"

#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/api/admission.h"
#include "server/formats/model_set.h"
#include "server/formats/safetensors_header.h"

namespace bonsai::api {
namespace {

using storage::HumanBytes;

absl::Status TooLarge(const std::string& what, uint64_t bytes, uint64_t limit, const std::string& flag) {
  return Refused(
      absl::ResourceExhaustedError(absl::StrCat(
          "the ", what, " is ", HumanBytes(bytes), ", over this server's limit of ",
          HumanBytes(limit), " (--", flag, "); use a server with a larger limit")),
      engine::ErrorReason::kModelTooLarge);
}

// What a client sends of a declared file: all of it, or for a header_only
// file (Inspect of safetensors) its 8-byte length and JSON header, which the
// format caps. Budgets and limits count these bytes: a header-only Inspect of
// a 16 GB checkpoint needs room for its headers, not for 3 x 16 GB.
uint64_t UploadedBytes(const v1::FileDeclaration& file) {
  if (!file.header_only()) return file.size_bytes();
  return std::min<uint64_t>(file.size_bytes(), 8 + formats::kMaxSafetensorsHeaderBytes);
}

}  // namespace

UploadFiles::~UploadFiles() { Fail(absl::CancelledError("the call ended")); }

absl::Status UploadFiles::Declare(
    const google::protobuf::RepeatedPtrField<v1::FileDeclaration>& files,
    uint64_t calibration_bytes, storage::ByteBudget& spool, storage::ByteBudget* memory_spool,
    bool allow_header_only) {
  if (files.empty()) {
    return absl::InvalidArgumentError(
        "the spec declares no files; list the model's files (name and size) in `files`");
  }
  if (static_cast<uint64_t>(files.size()) > options_.max_files) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the spec declares ", files.size(), " files, more than the ", options_.max_files,
        " this server takes in one job (--max_files)"));
  }
  absl::flat_hash_set<std::string> names;
  uint64_t total = 0;
  for (const v1::FileDeclaration& file : files) {
    if (!formats::IsSafeRelativePath(file.name())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file name \"", file.name(), "\" is not a relative path inside the model folder; "
          "use names like \"model-00001-of-00002.safetensors\" or \"sub/dir/file\" "
          "(no leading '/', no '..')"));
    }
    if (!names.insert(file.name()).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("file \"", file.name(), "\" is declared twice; declare each file once"));
    }
    if (file.header_only() && !allow_header_only) {
      return absl::InvalidArgumentError(absl::StrCat(
          "file \"", file.name(), "\" is declared header_only, which only Inspect accepts; "
          "send the whole file to compress it"));
    }
    total += UploadedBytes(file);
  }
  if (total > options_.max_model_bytes) {
    return TooLarge("model", total, options_.max_model_bytes, "max_model_bytes");
  }
  if (calibration_bytes > options_.max_calibration_bytes) {
    return TooLarge("calibration data", calibration_bytes, options_.max_calibration_bytes,
                    "max_calibration_bytes");
  }
  // The inputs, the outputs (never larger than the inputs: packing is used
  // only where it is smaller, an index file grows by its packed names) and a
  // packed output's scratch copy.
  const uint64_t room = 3 * total + calibration_bytes;
  // In memory when it has room now: page-cache writes of the disk spool are
  // about half of a big job's server CPU (the upload and the output each
  // written once and read once); a memfd costs the copy alone. Never waits
  // and never refuses: the disk spool is the fallback.
  if (memory_spool != nullptr && memory_spool->limit() > 0) {
    auto in_memory = memory_spool->TryReserve(room);
    if (in_memory.ok() && *in_memory != nullptr) {
      spool_room_ = *std::move(in_memory);
      place_ = {.dir = "", .in_memory = true};
    }
  }
  if (spool_room_ == nullptr) {
    auto reservation = spool.TryReserve(room);
    if (!reservation.ok()) {
      return Refused(reservation.status(), engine::ErrorReason::kModelTooLarge);
    }
    if (*reservation == nullptr) {
      return Refused(
          absl::ResourceExhaustedError(absl::StrCat(
              "the spool has no room for this job now (it needs ", HumanBytes(room), " of ",
              HumanBytes(spool.limit()), ", --max_spool_bytes); retry later or on another replica")),
          engine::ErrorReason::kSpoolFull);
    }
    spool_room_ = *std::move(reservation);
    place_ = {.dir = options_.spool_dir, .in_memory = false};
  }
  auto activity = std::make_shared<storage::UploadActivity>();
  for (const v1::FileDeclaration& file : files) {
    auto data = place_.Create(file.name());
    if (!data.ok()) return data.status();
    (*data)->set_activity(activity);
    files_.push_back({file, *std::move(data)});
  }
  if (calibration_bytes > 0) {
    v1::FileDeclaration declaration;
    declaration.set_name("calibration");
    declaration.set_size_bytes(calibration_bytes);
    auto data = place_.Create("calibration");
    if (!data.ok()) return data.status();
    (*data)->set_activity(activity);
    calibration_ = Upload{declaration, *std::move(data)};
  }
  model_bytes_ = total;
  declared_bytes_ = total + calibration_bytes;
  return absl::OkStatus();
}

absl::Status UploadFiles::Append(Upload& upload, const std::string& chunk, const std::string& what) {
  if (chunk.size() > options_.max_chunk_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a chunk of ", chunk.size(), " bytes is larger than the ", options_.max_chunk_bytes,
        " bytes this server accepts; send 1 MiB chunks"));
  }
  const uint64_t limit = UploadedBytes(upload.declaration);
  if (upload.data->size() + chunk.size() > limit) {
    if (upload.declaration.header_only()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "more bytes of ", what, " arrived than a header_only file sends (", limit,
          "); send only its 8-byte length and JSON header"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "more bytes of ", what, " arrived than the ", limit,
        " declared in the spec; declare each file's exact size"));
  }
  if (auto status = upload.data->Append(chunk); !status.ok()) return status;
  received_bytes_ += chunk.size();
  observability::RecordReceivedBytes(chunk.size());
  return absl::OkStatus();
}

absl::Status UploadFiles::AcceptFileChunk(const v1::FileChunk& chunk) {
  if (chunk.file() >= files_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a file_chunk names file ", chunk.file(), " but the spec declares ", files_.size(),
        " file(s); `file` is the index into CompressionSpec.files"));
  }
  Upload& upload = files_[chunk.file()];
  return Append(upload, chunk.data(), absl::StrCat("file \"", upload.declaration.name(), "\""));
}

absl::Status UploadFiles::AcceptCalibrationChunk(const std::string& chunk) {
  if (!calibration_) {
    return absl::InvalidArgumentError(
        "calibration data arrived but the spec declares calibration_size_bytes 0; declare its size");
  }
  return Append(*calibration_, chunk, "calibration data");
}

absl::Status UploadFiles::Complete() {
  absl::Status status;
  auto check = [&status](const Upload& upload) {
    const uint64_t got = upload.data->size();
    if (status.ok() && !upload.declaration.header_only() && got != upload.declaration.size_bytes()) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "the upload ended after ", got, " of the ", upload.declaration.size_bytes(),
          " bytes the spec declared for \"", upload.declaration.name(),
          "\"; the upload was cut short, send the whole file"));
    }
  };
  for (const Upload& upload : files_) check(upload);
  if (calibration_) check(*calibration_);
  if (!status.ok()) {
    Fail(status);
    return status;
  }
  for (Upload& upload : files_) upload.data->Complete();
  if (calibration_) calibration_->data->Complete();
  return absl::OkStatus();
}

void UploadFiles::Fail(const absl::Status& why) {
  for (Upload& upload : files_) upload.data->Fail(why);
  if (calibration_) calibration_->data->Fail(why);
}

std::vector<std::string> UploadFiles::names() const {
  std::vector<std::string> names;
  for (const Upload& upload : files_) names.push_back(upload.declaration.name());
  return names;
}

std::vector<uint64_t> UploadFiles::sizes() const {
  std::vector<uint64_t> sizes;
  for (const Upload& upload : files_) sizes.push_back(upload.declaration.size_bytes());
  return sizes;
}

formats::WaitPolicy UploadFiles::Wait(std::function<bool()> cancelled) const {
  formats::WaitPolicy wait;
  wait.cancelled = std::move(cancelled);
  wait.idle = absl::Seconds(options_.receive_idle_timeout_seconds);
  return wait;
}

std::vector<formats::InputFile> UploadFiles::InputFiles(const formats::WaitPolicy& wait) const {
  std::vector<formats::InputFile> inputs;
  for (size_t i = 0; i < files_.size(); ++i) {
    inputs.emplace_back(i, files_[i].declaration.name(), files_[i].declaration.size_bytes(),
                        files_[i].data, wait, files_[i].declaration.header_only());
  }
  return inputs;
}

std::optional<formats::InputFile> UploadFiles::Calibration(const formats::WaitPolicy& wait) const {
  if (!calibration_) return std::nullopt;
  return formats::InputFile(0, "calibration", calibration_->declaration.size_bytes(),
                            calibration_->data, wait);
}

}  // namespace bonsai::api
