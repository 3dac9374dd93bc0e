// --max_jobs_per_peer: who a peer is, and that its cap holds and frees.
#include "server/api/peer_limits.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/api/admission.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {
namespace {

using ::testing::HasSubstr;

TEST(PeerAddressTest, DropsThePortOfIpv4AndIpv6Peers) {
  EXPECT_EQ(PeerAddress("ipv4:127.0.0.1:50312"), "ipv4:127.0.0.1");
  EXPECT_EQ(PeerAddress("ipv4:10.1.2.3:1"), "ipv4:10.1.2.3");
  EXPECT_EQ(PeerAddress("ipv6:[::1]:50312"), "ipv6:[::1]");
  EXPECT_EQ(PeerAddress("ipv6:[fe80::1:2]:443"), "ipv6:[fe80::1:2]");
}

TEST(PeerAddressTest, KeepsPeersWithoutAPortWhole) {
  EXPECT_EQ(PeerAddress("unix:/tmp/bonsai.sock"), "unix:/tmp/bonsai.sock");
  EXPECT_EQ(PeerAddress("ipv4:"), "ipv4:");
  EXPECT_EQ(PeerAddress(""), "");
}

TEST(PeerLimitsTest, APeerAtItsCapIsRefusedNamingTheFlagWhileOthersAreNot) {
  PeerLimits limits(2);
  auto a1 = limits.Admit("ipv4:10.0.0.1");
  auto a2 = limits.Admit("ipv4:10.0.0.1");
  ASSERT_TRUE(a1.ok() && a2.ok());
  auto a3 = limits.Admit("ipv4:10.0.0.1");
  ASSERT_FALSE(a3.ok());
  EXPECT_EQ(a3.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(a3.status().message(), HasSubstr("--max_jobs_per_peer"));
  EXPECT_THAT(a3.status().message(), HasSubstr("ipv4:10.0.0.1"));
  EXPECT_TRUE(limits.Admit("ipv4:10.0.0.2").ok());
}

TEST(PeerLimitsTest, AReleasedSlotIsFreeAgainAndIdlePeersAreForgotten) {
  PeerLimits limits(1);
  {
    auto a = limits.Admit("ipv4:10.0.0.1");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(limits.admitted("ipv4:10.0.0.1"), 1);
    EXPECT_FALSE(limits.Admit("ipv4:10.0.0.1").ok());
  }
  EXPECT_EQ(limits.admitted("ipv4:10.0.0.1"), 0);
  EXPECT_TRUE(limits.Admit("ipv4:10.0.0.1").ok());
}

TEST(PeerLimitsTest, ZeroMeansNoCap) {
  PeerLimits limits(0);
  std::vector<std::unique_ptr<PeerSlot>> held;
  for (int i = 0; i < 100; ++i) {
    auto slot = limits.Admit("ipv4:10.0.0.1");
    ASSERT_TRUE(slot.ok()) << i;
    held.push_back(*std::move(slot));
  }
}

TEST(AdmissionTest, APeerOverItsCapTakesNoServerSlot) {
  engine::JobScheduler scheduler(/*workers=*/1, /*max_queued_jobs=*/2);
  PeerLimits limits(1);
  auto first = AdmitCall(scheduler, limits, "ipv4:10.0.0.1");
  ASSERT_TRUE(first.ok());
  auto refused = AdmitCall(scheduler, limits, "ipv4:10.0.0.1");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("--max_jobs_per_peer"));
  EXPECT_EQ(scheduler.admitted(), 1);
  first->reset();  // the job's end gives back both
  EXPECT_EQ(scheduler.admitted(), 0);
  EXPECT_EQ(limits.admitted("ipv4:10.0.0.1"), 0);
}

TEST(AdmissionTest, AFullServerRefusesWithoutKeepingThePeersPlace) {
  engine::JobScheduler scheduler(/*workers=*/1, /*max_queued_jobs=*/0);
  PeerLimits limits(5);
  auto first = AdmitCall(scheduler, limits, "ipv4:10.0.0.1");
  ASSERT_TRUE(first.ok());
  auto full = AdmitCall(scheduler, limits, "ipv4:10.0.0.2");
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(limits.admitted("ipv4:10.0.0.2"), 0);
}

TEST(AdmissionTest, AClosedServerSaysUnavailableEvenToAPeerAtItsCap) {
  engine::JobScheduler scheduler(/*workers=*/2, /*max_queued_jobs=*/2);
  PeerLimits limits(1);
  auto first = AdmitCall(scheduler, limits, "ipv4:10.0.0.1");
  ASSERT_TRUE(first.ok());
  scheduler.Close();
  auto refused = AdmitCall(scheduler, limits, "ipv4:10.0.0.1");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(refused.status().message(), HasSubstr("another replica"));
}

}  // namespace
}  // namespace bonsai::api
