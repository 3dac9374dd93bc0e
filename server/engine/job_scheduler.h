// Admission control, job threads and cores. A job takes a slot when its spec
// arrives (before its upload), so a full server says RESOURCE_EXHAUSTED at
// once instead of spooling uploads it cannot run. Slots are bounded by
// workers + max_queued_jobs, and every admitted job gets a thread at once:
// it works on each tensor as soon as its bytes arrive, and a job waiting for
// bytes must not keep a faster client's job from the CPU. So the CPU is
// handed out apart from threads: a job holds one of `workers` cores
// (CoreLease) only while it computes on a tensor, never while it waits.
#ifndef BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_
#define BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_

#include <deque>
#include <functional>
#include <string>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/core_lending.h"

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

// Held while a job computes; the destructor gives the core back. Virtual,
// so that a caller may wrap the scheduler's lease to see when its own job
// computes (the api layer's stage gauges).
class CoreLease {
 public:
  CoreLease() = default;
  virtual ~CoreLease() = default;
  CoreLease(const CoreLease&) = delete;
  CoreLease& operator=(const CoreLease&) = delete;
};

// What a job asks for a core through (the scheduler; none in benchmarks).
class CoreGate {
 public:
  virtual ~CoreGate() = default;
  // Waits for a free core; CANCELLED if `cancelled()` turns true meanwhile.
  virtual absl::StatusOr<std::unique_ptr<CoreLease>> AcquireCore(
      const std::function<bool()>& cancelled) = 0;
};

class JobScheduler final : public CoreGate {
 public:
  JobScheduler(int workers, int max_queued_jobs);
  ~JobScheduler();  // runs what is queued, then joins the workers

  // RESOURCE_EXHAUSTED when every slot is taken; UNAVAILABLE after Close().
  absl::StatusOr<std::unique_ptr<JobSlot>> Admit();

  // Runs `work` on a job thread at once. The caller holds a slot, so there
  // is a thread for it.
  void Run(std::function<void()> work);

  absl::StatusOr<std::unique_ptr<CoreLease>> AcquireCore(
      const std::function<bool()>& cancelled) override;

  // Refuses new admissions (graceful shutdown). Running work continues.
  void Close();

  int workers() const { return cores_; }
  int max_queued_jobs() const { return max_queued_; }
  int admitted() const;
  bool closed() const;

 private:
  friend class JobSlot;
  friend class SchedulerCoreLease;
  void Release();
  void ReleaseCore();
  void WorkerLoop();
  void PublishGauges() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int max_queued_;
  const int cores_;
  // Loops that are not BLAS may borrow the cores no job is computing on.
  CoreLending lending_;
  mutable absl::Mutex mu_;
  int admitted_ ABSL_GUARDED_BY(mu_) = 0;
  int computing_ ABSL_GUARDED_BY(mu_) = 0;  // jobs holding a core
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> threads_;
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_JOB_SCHEDULER_H_
