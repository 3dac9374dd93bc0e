// The server's own cap on a whole job (--max_job_seconds), beside the
// client's deadline: a job that trickles bytes just fast enough to dodge the
// receive-idle timeout, or whose client set no deadline, still ends, and
// gives back its slot, its memory and its spool room. One thread checks
// every call's deadline a few times a second: a job's length is measured in
// seconds to hours, so a tenth of a second late is nothing, and one thread
// costs less than a timer per call.
#ifndef BONSAI_SERVER_API_CALL_DEADLINES_H_
#define BONSAI_SERVER_API_CALL_DEADLINES_H_

#include <memory>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/api/active_calls.h"

namespace bonsai::api {

class CallDeadlines {
 public:
  CallDeadlines();
  ~CallDeadlines();  // stops the thread; pending deadlines are dropped
  CallDeadlines(const CallDeadlines&) = delete;
  CallDeadlines& operator=(const CallDeadlines&) = delete;

  // Aborts `call` with `status` at `deadline` unless it has ended (or
  // Forget was called) by then.
  void AbortAt(const std::shared_ptr<AbortableCall>& call, absl::Time deadline,
               absl::Status status);
  void Forget(const AbortableCall* call);
  size_t size() const;

 private:
  struct Entry {
    std::weak_ptr<AbortableCall> call;
    absl::Time deadline;
    absl::Status status;
  };
  void Loop();

  mutable absl::Mutex mu_;
  absl::flat_hash_map<const AbortableCall*, Entry> entries_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_CALL_DEADLINES_H_
