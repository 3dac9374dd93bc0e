#include "server/api/job_stage.h"

namespace bonsai::api {
namespace {

class CountedLease final : public engine::CoreLease {
 public:
  CountedLease(std::unique_ptr<engine::CoreLease> lease, std::atomic<int>* computing)
      : lease_(std::move(lease)), computing_(computing) {
    computing_->fetch_add(1);
  }
  ~CountedLease() override { computing_->fetch_sub(1); }

 private:
  std::unique_ptr<engine::CoreLease> lease_;
  std::atomic<int>* computing_;
};

}  // namespace

std::shared_ptr<void> JobStage::Computing() {
  computing_.fetch_add(1);
  return std::shared_ptr<void>(nullptr, [this](void*) { computing_.fetch_sub(1); });
}

std::optional<observability::AdmittedStage> JobStage::stage() const {
  using observability::AdmittedStage;
  if (!admitted_.load()) return std::nullopt;
  if (work_done_.load()) return AdmittedStage::kSending;
  if (computing_.load() > 0) return AdmittedStage::kRunning;
  if (!upload_complete_.load()) return AdmittedStage::kReceiving;
  return AdmittedStage::kQueued;
}

absl::StatusOr<std::unique_ptr<engine::CoreLease>> StageCountingCores::AcquireCore(
    const std::function<bool()>& cancelled) {
  auto lease = cores_->AcquireCore(cancelled);
  if (!lease.ok()) return lease.status();
  return std::unique_ptr<engine::CoreLease>(
      std::make_unique<CountedLease>(*std::move(lease), &stage_->computing_));
}

}  // namespace bonsai::api
