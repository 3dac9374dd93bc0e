#include "server/api/call_deadlines.h"

#include <vector>

namespace bonsai::api {
namespace {

constexpr absl::Duration kTick = absl::Milliseconds(100);

}  // namespace

CallDeadlines::CallDeadlines() : thread_([this] { Loop(); }) {}

CallDeadlines::~CallDeadlines() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

void CallDeadlines::AbortAt(const std::shared_ptr<AbortableCall>& call, absl::Time deadline,
                            absl::Status status) {
  absl::MutexLock lock(&mu_);
  entries_[call.get()] = Entry{call, deadline, std::move(status)};
}

void CallDeadlines::Forget(const AbortableCall* call) {
  absl::MutexLock lock(&mu_);
  entries_.erase(call);
}

size_t CallDeadlines::size() const {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

void CallDeadlines::Loop() {
  for (;;) {
    std::vector<std::pair<std::shared_ptr<AbortableCall>, absl::Status>> due;
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), kTick);
      if (stopping_) return;
      const absl::Time now = absl::Now();
      for (auto it = entries_.begin(); it != entries_.end();) {
        auto current = it++;
        if (current->second.deadline > now) continue;
        if (auto call = current->second.call.lock()) {
          due.emplace_back(std::move(call), current->second.status);
        }
        entries_.erase(current);
      }
    }
    // Outside the lock: Abort may end the call, whose end calls Forget.
    for (auto& [call, status] : due) call->Abort(status);
  }
}

}  // namespace bonsai::api
