#include "server/api/active_calls.h"

namespace bonsai::api {

void ActiveCalls::Add(const std::shared_ptr<AbortableCall>& call) {
  absl::MutexLock lock(&mu_);
  calls_[call.get()] = call;
}

void ActiveCalls::Remove(const AbortableCall* call) {
  absl::MutexLock lock(&mu_);
  calls_.erase(call);
}

void ActiveCalls::AbortAll(const absl::Status& status) {
  std::vector<std::shared_ptr<AbortableCall>> alive;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [key, weak] : calls_) {
      if (auto call = weak.lock()) alive.push_back(std::move(call));
    }
  }
  // Outside the lock: Abort may finish the call, and its end removes it.
  for (auto& call : alive) call->Abort(status);
}

observability::AdmittedJobCounts ActiveCalls::CountByStage() const {
  std::vector<std::shared_ptr<AbortableCall>> alive;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, weak] : calls_) {
      if (auto call = weak.lock()) alive.push_back(std::move(call));
    }
  }
  // Outside the lock: dropping the last reference may delete a call.
  observability::AdmittedJobCounts counts{};
  for (const auto& call : alive) {
    if (auto stage = call->stage()) ++counts[static_cast<size_t>(*stage)];
  }
  return counts;
}

size_t ActiveCalls::size() const {
  absl::MutexLock lock(&mu_);
  return calls_.size();
}

}  // namespace bonsai::api
