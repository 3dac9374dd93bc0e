#include "server/storage/byte_budget.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace bonsai::storage {

std::string HumanBytes(uint64_t bytes) {
  if (bytes >= (1ull << 30)) return absl::StrFormat("%.2f GiB (%d bytes)", bytes / double(1ull << 30), bytes);
  return absl::StrFormat("%.1f MiB (%d bytes)", bytes / double(1 << 20), bytes);
}

Reservation::~Reservation() {
  if (budget_ != nullptr) budget_->Release(bytes_);
}

uint64_t ByteBudget::in_use() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

absl::Status ByteBudget::NeverFits(uint64_t bytes) const {
  return absl::ResourceExhaustedError(absl::StrCat(
      "the job needs ", HumanBytes(bytes), " of ", what_, ", more than this server's whole budget of ",
      HumanBytes(limit_), " (--", flag_, "); use a server with a larger --", flag_,
      " or a smaller model"));
}

absl::StatusOr<std::unique_ptr<Reservation>> ByteBudget::TryReserve(uint64_t bytes) {
  if (limit_ == 0) return std::make_unique<Reservation>(nullptr, bytes);
  if (bytes > limit_) return NeverFits(bytes);
  absl::MutexLock lock(&mu_);
  if (used_ + bytes > limit_) return std::unique_ptr<Reservation>();
  used_ += bytes;
  return std::make_unique<Reservation>(this, bytes);
}

absl::StatusOr<std::unique_ptr<Reservation>> ByteBudget::Reserve(
    uint64_t bytes, const std::function<bool()>& cancelled) {
  if (limit_ == 0) return std::make_unique<Reservation>(nullptr, bytes);
  if (bytes > limit_) return NeverFits(bytes);
  absl::MutexLock lock(&mu_);
  auto fits = [this, bytes]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return used_ + bytes <= limit_; };
  while (!fits()) {
    if (cancelled && cancelled()) return absl::CancelledError("the job was cancelled while it waited for memory");
    mu_.AwaitWithTimeout(absl::Condition(&fits), absl::Milliseconds(200));
  }
  used_ += bytes;
  return std::make_unique<Reservation>(this, bytes);
}

void ByteBudget::Release(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ -= bytes;
}

}  // namespace bonsai::storage
