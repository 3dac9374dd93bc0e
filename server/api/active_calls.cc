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

size_t ActiveCalls::size() const {
  absl::MutexLock lock(&mu_);
  return calls_.size();
}

}  // namespace bonsai::api
