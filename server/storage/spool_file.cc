#include "server/storage/spool_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace bonsai::storage {
namespace {

absl::Status ErrnoStatus(const std::string& what, int error) {
  // A full or failing spool disk is the server's resource, not the client's
  // mistake: RESOURCE_EXHAUSTED for ENOSPC/EDQUOT, INTERNAL otherwise.
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  if (error == ENOSPC || error == EDQUOT) {
    return absl::ResourceExhaustedError(
        absl::StrCat(message, "; the spool disk is full (--spool_dir); retry later or give "
                              "the server more spool space"));
  }
  return absl::InternalError(message);
}

int OpenUnlinked(const std::string& dir) {
  int fd = open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
  // Filesystems without O_TMPFILE: create, then unlink at once.
  std::string path = dir + "/bonsai-spool-XXXXXX";
  fd = mkostemp(path.data(), O_CLOEXEC);
  if (fd >= 0) unlink(path.c_str());
  return fd;
}

}  // namespace

absl::StatusOr<std::shared_ptr<SpoolFile>> SpoolFile::Create(const std::string& dir,
                                                             std::string name) {
  const int fd = OpenUnlinked(dir);
  if (fd < 0) return ErrnoStatus(absl::StrCat("cannot create a spool file in ", dir), errno);
  return std::shared_ptr<SpoolFile>(new SpoolFile(fd, std::move(name)));
}

absl::StatusOr<std::shared_ptr<SpoolFile>> SpoolFile::CreateInMemory(std::string name) {
  const int fd = memfd_create("bonsai", MFD_CLOEXEC);
  if (fd < 0) return ErrnoStatus("memfd_create", errno);
  return std::shared_ptr<SpoolFile>(new SpoolFile(fd, std::move(name)));
}

absl::StatusOr<std::shared_ptr<SpoolFile>> SpoolPlace::Create(std::string name) const {
  return in_memory ? SpoolFile::CreateInMemory(std::move(name))
                   : SpoolFile::Create(dir, std::move(name));
}

SpoolFile::~SpoolFile() { close(fd_); }

absl::Status SpoolFile::Append(std::string_view bytes) {
  uint64_t offset;
  {
    absl::MutexLock lock(&mu_);
    if (complete_ || !failure_.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(name_, " is already closed"));
    }
    offset = size_;
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = pwrite(fd_, bytes.data() + done, bytes.size() - done, offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(absl::StrCat("writing ", name_, " to the spool"), errno);
    }
    done += static_cast<size_t>(n);
  }
  {
    absl::MutexLock lock(&mu_);
    size_ += bytes.size();
  }
  if (activity_) activity_->Touch();
  Changed();
  return absl::OkStatus();
}

void SpoolFile::Complete() {
  {
    absl::MutexLock lock(&mu_);
    complete_ = true;
  }
  Changed();
}

void SpoolFile::Fail(const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    if (complete_ || !failure_.ok()) return;
    failure_ = why.ok() ? absl::CancelledError("the upload was abandoned") : why;
  }
  Changed();
}

void SpoolFile::Changed() {
  if (on_change_) on_change_();
}

uint64_t SpoolFile::size() const {
  absl::MutexLock lock(&mu_);
  return size_;
}

bool SpoolFile::complete() const {
  absl::MutexLock lock(&mu_);
  return complete_;
}

absl::Status SpoolFile::WaitFor(uint64_t end, const std::function<bool()>& cancelled,
                                absl::Duration idle) const {
  // Polls cancellation a few times a second: the token is not a condition
  // this mutex guards.
  constexpr absl::Duration kPoll = absl::Milliseconds(200);
  absl::MutexLock lock(&mu_);
  uint64_t seen = size_;
  absl::Time last_growth = absl::Now();
  while (true) {
    if (size_ >= end) return absl::OkStatus();
    if (!failure_.ok()) return failure_;
    if (complete_) {
      return absl::OutOfRangeError(absl::StrCat(name_, " ends at byte ", size_,
                                                ", before byte ", end, " that was needed"));
    }
    if (cancelled && cancelled()) return absl::CancelledError("the job was cancelled");
    if (size_ != seen) {
      seen = size_;
      last_growth = absl::Now();
    }
    if (activity_ && activity_->last() > last_growth) last_growth = activity_->last();
    if (absl::Now() - last_growth > idle) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no byte of ", name_, " arrived for ", absl::FormatDuration(idle),
          "; the upload stalled (--receive_idle_timeout_seconds)"));
    }
    auto ready = [this, end]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
      return size_ >= end || complete_ || !failure_.ok();
    };
    mu_.AwaitWithTimeout(absl::Condition(&ready), kPoll);
  }
}

absl::Status SpoolFile::ReadAt(uint64_t offset, absl::Span<char> out) const {
  if (offset + out.size() > size()) {
    return absl::OutOfRangeError(absl::StrCat("read of ", out.size(), " bytes at ", offset,
                                              " is past the ", size(), " bytes of ", name_,
                                              " written so far"));
  }
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = pread(fd_, out.data() + done, out.size() - done, offset + done);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) return absl::InternalError(absl::StrCat(name_, " is shorter on disk than written"));
    if (n < 0) return ErrnoStatus(absl::StrCat("reading ", name_, " from the spool"), errno);
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SpoolFile::ReadAll() const {
  std::string bytes(size(), '\0');
  if (auto status = ReadAt(0, absl::MakeSpan(bytes.data(), bytes.size())); !status.ok()) {
    return status;
  }
  return bytes;
}

}  // namespace bonsai::storage
