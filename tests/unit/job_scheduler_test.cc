// Admission and cores: slots bound admitted jobs, cores bound computing ones.
#include "server/engine/job_scheduler.h"

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace bonsai::engine {
namespace {

TEST(JobSchedulerTest, AdmitsWorkersPlusQueuedJobsThenRefusesUntilASlotIsFreed) {
  JobScheduler scheduler(/*workers=*/2, /*max_queued_jobs=*/1);
  std::vector<std::unique_ptr<JobSlot>> slots;
  for (int i = 0; i < 3; ++i) {
    auto slot = scheduler.Admit();
    ASSERT_TRUE(slot.ok()) << slot.status();
    slots.push_back(std::move(*slot));
  }
  EXPECT_EQ(scheduler.admitted(), 3);
  auto refused = scheduler.Admit();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("job slots"), std::string::npos)
      << refused.status().message();

  slots.pop_back();  // a job completes
  EXPECT_EQ(scheduler.admitted(), 2);
  EXPECT_TRUE(scheduler.Admit().ok());  // its slot is free again (and released at once)
}

TEST(JobSchedulerTest, AfterCloseNewJobsAreUnavailableAndAdmittedOnesStillRun) {
  JobScheduler scheduler(1, 1);
  auto slot = scheduler.Admit();
  ASSERT_TRUE(slot.ok());
  scheduler.Close();
  auto refused = scheduler.Admit();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);

  absl::Notification ran;
  scheduler.Run([&] { ran.Notify(); });
  EXPECT_TRUE(ran.WaitForNotificationWithTimeout(absl::Seconds(30)));
}

TEST(JobSchedulerTest, NoMoreJobsComputeAtOnceThanThereAreCores) {
  constexpr int kCores = 2, kJobs = 5;
  JobScheduler scheduler(kCores, kJobs - kCores);
  std::atomic<int> computing{0}, most{0}, done{0};
  std::vector<std::unique_ptr<JobSlot>> slots;
  for (int i = 0; i < kJobs; ++i) slots.push_back(std::move(*scheduler.Admit()));
  absl::Notification all_done;
  for (int i = 0; i < kJobs; ++i) {
    scheduler.Run([&] {
      for (int tensor = 0; tensor < 3; ++tensor) {
        auto core = scheduler.AcquireCore([] { return false; });
        ASSERT_TRUE(core.ok());
        const int now = ++computing;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        absl::SleepFor(absl::Milliseconds(5));
        --computing;
      }
      if (++done == kJobs) all_done.Notify();
    });
  }
  ASSERT_TRUE(all_done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  EXPECT_LE(most.load(), kCores);
  EXPECT_GE(most.load(), 1);
}

TEST(JobSchedulerTest, AJobWaitingForACoreStopsWhenItIsCancelled) {
  JobScheduler scheduler(1, 1);
  auto held = scheduler.AcquireCore([] { return false; });
  ASSERT_TRUE(held.ok());
  std::atomic<bool> cancelled{false};
  absl::StatusCode code = absl::StatusCode::kOk;
  std::thread waiter([&] { code = scheduler.AcquireCore([&] { return cancelled.load(); }).status().code(); });
  absl::SleepFor(absl::Milliseconds(50));
  cancelled = true;
  waiter.join();
  EXPECT_EQ(code, absl::StatusCode::kCancelled);
  held->reset();
  EXPECT_TRUE(scheduler.AcquireCore([] { return false; }).ok());  // the core is free again
}

}  // namespace
}  // namespace bonsai::engine
