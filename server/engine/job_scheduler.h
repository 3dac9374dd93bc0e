// Admission control and the worker pool. A job takes a slot when its spec
// arrives (before its upload), so a full server says RESOURCE_EXHAUSTED at
// once instead of buffering uploads it cannot run. Slots are bounded by
// workers + max_queued_jobs; the pool's queue can therefore never overflow.
#ifndef BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_
#define BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace bonsai::engine {

class JobScheduler;

// Held by a call from admission until its job has finished; releasing it
// frees the slot.
class JobSlot {
 public:
  explicit JobSlot(JobScheduler* scheduler) : scheduler_(scheduler) {}
  ~JobSlot();
  JobSlot(const JobSlot&) = delete;
  JobSlot& operator=(const JobSlot&) = delete;

 private:
  JobScheduler* scheduler_;
};

class JobScheduler {
 public:
  JobScheduler(int workers, int max_queued_jobs);
  ~JobScheduler();  // runs what is queued, then joins the workers

  // RESOURCE_EXHAUSTED when every slot is taken; UNAVAILABLE after Close().
  absl::StatusOr<std::unique_ptr<JobSlot>> Admit();

  // Runs `work` on a worker. The caller holds a slot, so there is room.
  void Run(std::function<void()> work);

  // Refuses new admissions (graceful shutdown). Running work continues.
  void Close();

  int workers() const { return static_cast<int>(threads_.size()); }
  int max_queued_jobs() const { return max_queued_; }
  int admitted() const;

 private:
  friend class JobSlot;
  void Release();
  void WorkerLoop();
  void PublishGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_queued_;
  mutable absl::Mutex mu_;
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_
