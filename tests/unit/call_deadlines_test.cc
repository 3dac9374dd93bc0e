// --max_job_seconds' clock: a call past its deadline is aborted with the
// status it was given; one that ended or was forgotten is left alone.
#include "server/api/call_deadlines.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace bonsai::api {
namespace {

class RecordingCall : public AbortableCall {
 public:
  void Abort(const absl::Status& status) override {
    status_ = status;
    ++aborts_;
    aborted_.Notify();
  }
  std::optional<observability::AdmittedStage> stage() const override { return std::nullopt; }

  absl::Status status_;
  std::atomic<int> aborts_{0};
  absl::Notification aborted_;
};

TEST(CallDeadlinesTest, ACallPastItsDeadlineIsAbortedOnceWithItsStatus) {
  CallDeadlines deadlines;
  auto call = std::make_shared<RecordingCall>();
  deadlines.AbortAt(call, absl::Now() + absl::Milliseconds(50),
                    absl::DeadlineExceededError("over --max_job_seconds"));
  ASSERT_TRUE(call->aborted_.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(call->status_.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(call->status_.message(), "over --max_job_seconds");
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(call->aborts_, 1);
  EXPECT_EQ(deadlines.size(), 0u);
}

TEST(CallDeadlinesTest, AForgottenCallIsNotAborted) {
  CallDeadlines deadlines;
  auto call = std::make_shared<RecordingCall>();
  deadlines.AbortAt(call, absl::Now() + absl::Milliseconds(100), absl::DeadlineExceededError(""));
  deadlines.Forget(call.get());
  absl::SleepFor(absl::Milliseconds(400));
  EXPECT_EQ(call->aborts_, 0);
}

TEST(CallDeadlinesTest, ACallThatIsGoneIsDroppedWithoutAbort) {
  CallDeadlines deadlines;
  std::weak_ptr<RecordingCall> weak;
  {
    auto call = std::make_shared<RecordingCall>();
    weak = call;
    deadlines.AbortAt(call, absl::Now() + absl::Milliseconds(50), absl::DeadlineExceededError(""));
  }
  EXPECT_TRUE(weak.expired());  // the deadline holds no reference
  absl::SleepFor(absl::Milliseconds(400));
  EXPECT_EQ(deadlines.size(), 0u);
}

TEST(CallDeadlinesTest, ALaterDeadlineIsNotAbortedEarly) {
  CallDeadlines deadlines;
  auto call = std::make_shared<RecordingCall>();
  deadlines.AbortAt(call, absl::Now() + absl::Hours(1), absl::DeadlineExceededError(""));
  absl::SleepFor(absl::Milliseconds(300));
  EXPECT_EQ(call->aborts_, 0);
  EXPECT_EQ(deadlines.size(), 1u);
}

}  // namespace
}  // namespace bonsai::api
