// The calls in progress, so that a graceful shutdown can end the ones that
// outlive the grace period with UNAVAILABLE (clients then retry elsewhere).
#ifndef BONSAI_SERVER_API_ACTIVE_CALLS_H_
#define BONSAI_SERVER_API_ACTIVE_CALLS_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

class AbortableCall {
 public:
  virtual ~AbortableCall() = default;
  // Cancels the call's job and finishes the call with `status`.
  virtual void Abort(const absl::Status& status) = 0;
  // Where the call's job is; nullopt until it is admitted.
  virtual std::optional<observability::AdmittedStage> stage() const = 0;
};

class ActiveCalls {
 public:
  void Add(const std::shared_ptr<AbortableCall>& call);
  void Remove(const AbortableCall* call);
  void AbortAll(const absl::Status& status);
  // Admitted jobs by stage, indexed by observability::AdmittedStage.
  observability::AdmittedJobCounts CountByStage() const;
  size_t size() const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<const AbortableCall*, std::weak_ptr<AbortableCall>> calls_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_ACTIVE_CALLS_H_
