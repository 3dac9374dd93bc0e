#include "server/engine/job_scheduler.h"

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "server/observability/metrics.h"
#include "server/tensor/spare_cores.h"

namespace bonsai::engine {

JobSlot::~JobSlot() { scheduler_->Release(); }

JobScheduler::JobScheduler(int workers, int max_queued_jobs)
    : max_queued_(max_queued_jobs) {
  // One BLAS thread per worker: parallelism comes from running jobs side by
  // side, and a multi-threaded BLAS inside each would oversubscribe the cores.
  openblas_set_num_threads(1);
  // Loops that are not BLAS may borrow the cores of idle workers.
  tensor::SetCoreBudget(workers);
  threads_.reserve(workers);
  for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { WorkerLoop(); });
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
  const int capacity = static_cast<int>(threads_.size()) + max_queued_;
  if (admitted_ >= capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the server is busy: all ", capacity, " job slots (", threads_.size(),
        " workers + ", max_queued_, " queued) are taken; retry with backoff or "
        "use another replica"));
  }
  ++admitted_;
  PublishGauges();
  return std::make_unique<JobSlot>(this);
}

void JobScheduler::Run(std::function<void()> work) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(work));
  PublishGauges();
}

void JobScheduler::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
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

void JobScheduler::PublishGauges() {
  tensor::SetRunningJobs(running_);
  observability::SetJobsRunning(running_);
  observability::SetJobsQueued(static_cast<int64_t>(queue_.size()));
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
      ++running_;
      PublishGauges();
    }
    work();
    absl::MutexLock lock(&mu_);
    --running_;
    PublishGauges();
  }
}

}  // namespace bonsai::engine
