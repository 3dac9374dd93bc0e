// A budget of bytes shared by every job: the spool's disk (--max_spool_bytes)
// and the jobs' working memory (--max_memory_bytes). A job takes its share
// before it uses it and gives it back by dropping its reservation, so the
// server never promises more than it has. Whether a job waits for room or is
// refused at once is the caller's choice.
#ifndef BONSAI_SERVER_STORAGE_BYTE_BUDGET_H_
#define BONSAI_SERVER_STORAGE_BYTE_BUDGET_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace bonsai::storage {

class ByteBudget;

// Held while the bytes are in use; the destructor returns them.
class Reservation {
 public:
  Reservation(ByteBudget* budget, uint64_t bytes) : budget_(budget), bytes_(bytes) {}
  ~Reservation();
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  uint64_t bytes() const { return bytes_; }

 private:
  ByteBudget* budget_;
  uint64_t bytes_;
};

class ByteBudget {
 public:
  // `what` and `flag` name the budget in messages ("working memory",
  // "max_memory_bytes"). A limit of 0 means unlimited.
  ByteBudget(std::string what, std::string flag, uint64_t limit)
      : what_(std::move(what)), flag_(std::move(flag)), limit_(limit) {}

  uint64_t limit() const { return limit_; }
  uint64_t in_use() const;

  // RESOURCE_EXHAUSTED, saying how much is needed and which flag sets the
  // budget, when `bytes` can never fit; otherwise a reservation if they fit
  // now, or null when they do not fit yet.
  absl::StatusOr<std::unique_ptr<Reservation>> TryReserve(uint64_t bytes);
  // Waits until the bytes fit (or can never fit: RESOURCE_EXHAUSTED), polling
  // `cancelled` a few times a second (CANCELLED).
  absl::StatusOr<std::unique_ptr<Reservation>> Reserve(uint64_t bytes,
                                                       const std::function<bool()>& cancelled);

 private:
  friend class Reservation;
  void Release(uint64_t bytes);
  absl::Status NeverFits(uint64_t bytes) const;

  const std::string what_, flag_;
  const uint64_t limit_;
  mutable absl::Mutex mu_;
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// "1.5 GiB (1610612736 bytes)"
std::string HumanBytes(uint64_t bytes);

}  // namespace bonsai::storage

#endif  // BONSAI_SERVER_STORAGE_BYTE_BUDGET_H_
