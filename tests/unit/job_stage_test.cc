// bonsai_jobs_admitted's stage of one job, and the core gate that counts it.
#include "server/api/job_stage.h"

#include "gtest/gtest.h"
#include "server/api/active_calls.h"

namespace bonsai::api {
namespace {

using observability::AdmittedStage;

TEST(JobStageTest, FollowsAJobFromAdmissionToItsOutput) {
  JobStage stage;
  EXPECT_EQ(stage.stage(), std::nullopt);  // a stream that sent no spec yet
  stage.Admitted();
  EXPECT_EQ(stage.stage(), AdmittedStage::kReceiving);
  stage.UploadComplete();
  EXPECT_EQ(stage.stage(), AdmittedStage::kQueued);
  {
    auto computing = stage.Computing();
    EXPECT_EQ(stage.stage(), AdmittedStage::kRunning);
  }
  EXPECT_EQ(stage.stage(), AdmittedStage::kQueued);
  stage.WorkDone();
  EXPECT_EQ(stage.stage(), AdmittedStage::kSending);
}

TEST(JobStageTest, AJobComputingOnBytesThatHaveArrivedIsRunningNotReceiving) {
  engine::JobScheduler scheduler(/*workers=*/1, /*max_queued_jobs=*/1);
  JobStage stage;
  StageCountingCores cores(&scheduler, &stage);
  stage.Admitted();
  {
    auto lease = cores.AcquireCore(nullptr);
    ASSERT_TRUE(lease.ok());
    EXPECT_EQ(stage.stage(), AdmittedStage::kRunning);
  }
  EXPECT_EQ(stage.stage(), AdmittedStage::kReceiving);  // the core went back
  // And the scheduler's own core went back with it.
  auto again = cores.AcquireCore([] { return true; });
  EXPECT_TRUE(again.ok());
}

class StagedCall : public AbortableCall {
 public:
  explicit StagedCall(std::optional<AdmittedStage> stage) : stage_(stage) {}
  void Abort(const absl::Status&) override {}
  std::optional<AdmittedStage> stage() const override { return stage_; }
  std::optional<AdmittedStage> stage_;
};

TEST(ActiveCallsTest, CountsAdmittedCallsByStageAndLeavesOutTheRest) {
  ActiveCalls calls;
  std::vector<std::shared_ptr<StagedCall>> held;
  for (auto stage : {std::optional(AdmittedStage::kReceiving),
                     std::optional(AdmittedStage::kReceiving), std::optional(AdmittedStage::kSending),
                     std::optional<AdmittedStage>()}) {
    held.push_back(std::make_shared<StagedCall>(stage));
    calls.Add(held.back());
  }
  const observability::AdmittedJobCounts counts = calls.CountByStage();
  EXPECT_EQ(counts[static_cast<size_t>(AdmittedStage::kReceiving)], 2);
  EXPECT_EQ(counts[static_cast<size_t>(AdmittedStage::kQueued)], 0);
  EXPECT_EQ(counts[static_cast<size_t>(AdmittedStage::kRunning)], 0);
  EXPECT_EQ(counts[static_cast<size_t>(AdmittedStage::kSending)], 1);
}

}  // namespace
}  // namespace bonsai::api
