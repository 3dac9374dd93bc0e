#include "server/engine/error_reason.h"

#include <gtest/gtest.h>

namespace bonsai::engine {
namespace {

TEST(ErrorReasonTest, TravelsWithTheStatus) {
  const absl::Status status =
      WithReason(absl::ResourceExhaustedError("busy"), ErrorReason::kQueueFull);
  EXPECT_EQ(ReasonOf(status), "QUEUE_FULL");
  EXPECT_EQ(status.message(), "busy");
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(IsBusyReason(*ReasonOf(status)));
  EXPECT_FALSE(IsBusyReason("MODEL_TOO_LARGE"));
}

TEST(ErrorReasonTest, TheSiteClosestToTheCauseWins) {
  const absl::Status inner =
      WithReason(absl::InvalidArgumentError("bad header"), ErrorReason::kInvalidModel);
  EXPECT_EQ(ReasonOf(WithReason(inner, ErrorReason::kInvalidSpec)), "INVALID_MODEL");
}

TEST(ErrorReasonTest, OkAndUntaggedStatusesHaveNoReason) {
  EXPECT_TRUE(WithReason(absl::OkStatus(), ErrorReason::kQueueFull).ok());
  EXPECT_EQ(ReasonOf(WithReason(absl::OkStatus(), ErrorReason::kQueueFull)), std::nullopt);
  EXPECT_EQ(ReasonOf(absl::InternalError("x")), std::nullopt);
}

TEST(ErrorReasonTest, OnlyInvalidArgumentIsTheClientsFile) {
  EXPECT_EQ(ReasonOf(TagInvalidArgument(absl::InvalidArgumentError("x"), ErrorReason::kInvalidModel)),
            "INVALID_MODEL");
  // A spool read that failed is the server's trouble, not a bad model.
  EXPECT_EQ(ReasonOf(TagInvalidArgument(absl::InternalError("pread"), ErrorReason::kInvalidModel)),
            std::nullopt);
}

}  // namespace
}  // namespace bonsai::engine
