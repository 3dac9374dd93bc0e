// Where one admitted job is, for bonsai_jobs_admitted{stage}: receiving
// (its upload is not complete and it computes on nothing), queued (all its
// bytes are in, it waits for a core or memory), running (it holds a core),
// sending (its work is over, its output or report is still going out).
// Set from the reading side, the job's thread and the writing side; read at
// each scrape, so every field is atomic and the stage is derived on read.
#ifndef BONSAI_SERVER_API_JOB_STAGE_H_
#define BONSAI_SERVER_API_JOB_STAGE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>

#include "server/engine/job_scheduler.h"
#include "server/observability/metrics.h"

namespace bonsai::api {

class JobStage {
 public:
  void Admitted() { admitted_.store(true); }
  void UploadComplete() { upload_complete_.store(true); }
  void WorkDone() { work_done_.store(true); }

  // Counts the job as running while the returned guard lives (work that
  // takes no core lease, such as Inspect's parse).
  std::shared_ptr<void> Computing();

  // nullopt before admission (a stream that sent no spec yet).
  std::optional<observability::AdmittedStage> stage() const;

 private:
  friend class StageCountingCores;
  std::atomic<bool> admitted_{false};
  std::atomic<bool> upload_complete_{false};
  std::atomic<bool> work_done_{false};
  std::atomic<int> computing_{0};
};

// The engine's core gate as one job sees it: each core its job holds counts
// that job as running.
class StageCountingCores final : public engine::CoreGate {
 public:
  StageCountingCores(engine::CoreGate* cores, JobStage* stage) : cores_(cores), stage_(stage) {}
  absl::StatusOr<std::unique_ptr<engine::CoreLease>> AcquireCore(
      const std::function<bool()>& cancelled) override;

 private:
  engine::CoreGate* cores_;
  JobStage* stage_;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_JOB_STAGE_H_
