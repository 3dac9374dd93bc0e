#include "server/engine/job_scheduler.h"

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "server/observability/metrics.h"
#include "server/storage/allocator_tuning.h"

namespace bonsai::engine {

JobSlot::~JobSlot() { scheduler_->Release(); }

class SchedulerCoreLease final : public CoreLease {
 public:
  explicit SchedulerCoreLease(JobScheduler* scheduler) : scheduler_(scheduler) {}
  ~SchedulerCoreLease() override { scheduler_->ReleaseCore(); }

 private:
  JobScheduler* scheduler_;
};

JobScheduler::JobScheduler(int workers, int max_queued_jobs)
    : max_queued_(max_queued_jobs), cores_(workers), lending_(workers) {
  // One BLAS thread per job: parallelism comes from running jobs side by
  // side, and a multi-threaded BLAS inside each would oversubscribe the cores.
  openblas_set_num_threads(1);
  observability::SetJobSlots(workers + max_queued_jobs);
  const int threads = workers + max_queued_jobs;
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { WorkerLoop(); });
}

JobScheduler::~JobScheduler() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    closed_ = true;
  }
  for (auto& thread : threads_) thread.join();
}

absl::StatusOr<std::unique_ptr<JobSlot>> JobScheduler::Admit() {
  absl::MutexLock lock(&mu_);
  if (closed_) {
    return absl::UnavailableError(
        "the server is shutting down and takes no new jobs; retry on another replica");
  }
  const int capacity = cores_ + max_queued_;
  if (admitted_ >= capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is busy: all ", capacity, " job slots (", cores_, " workers + ", max_queued_,
        " queued) are taken; retry with backoff or use another replica"));
  }
  ++admitted_;
  PublishGauges();
  return std::make_unique<JobSlot>(this);
}

void JobScheduler::Run(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(work));
}

absl::StatusOr<std::unique_ptr<CoreLease>> JobScheduler::AcquireCore(
    const std::function<bool()>& cancelled) {
  absl::MutexLock lock(&mu_);
  auto free = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return computing_ < cores_; };
  while (!free()) {
    if (cancelled && cancelled()) return absl::CancelledError("the job was cancelled while it waited for a core");
    mu_.AwaitWithTimeout(absl::Condition(&free), absl::Milliseconds(200));
  }
  ++computing_;
  PublishGauges();
  return std::make_unique<SchedulerCoreLease>(this);
}

void JobScheduler::ReleaseCore() {
  absl::MutexLock lock(&mu_);
  --computing_;
  PublishGauges();
}

void JobScheduler::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

bool JobScheduler::closed() const {
  absl::MutexLock lock(&mu_);
  return closed_;
}

int JobScheduler::admitted() const {
  absl::MutexLock lock(&mu_);
  return admitted_;
}

void JobScheduler::Release() {
  absl::MutexLock lock(&mu_);
  --admitted_;
  PublishGauges();
}

// Running: jobs computing on a core. Queued: every other admitted job
// (uploading, waiting for bytes, a core or memory, or sending), so a server
// whose slots are all held shows it, whatever its jobs are doing.
void JobScheduler::PublishGauges() {
  lending_.SetComputingJobs(computing_);
  observability::SetJobsRunning(computing_);
  observability::SetJobsQueued(admitted_ - computing_);
}

void JobScheduler::WorkerLoop() {
  for (;;) {
    std::function<void()> work;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](JobScheduler* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_ || !self->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping
      work = std::move(queue_.front());
      queue_.pop_front();
    }
    work();
    work = nullptr;  // the job's captures (its call, upload, output) go now
    storage::ReleaseFreeMemory();
  }
}

}  // namespace bonsai::engine
