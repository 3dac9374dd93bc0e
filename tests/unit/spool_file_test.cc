#include "server/storage/spool_file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "server/storage/byte_budget.h"

namespace bonsai::storage {
namespace {

using ::testing::HasSubstr;

std::shared_ptr<SpoolFile> NewFile() {
  auto file = SpoolFile::Create("/tmp", "model.safetensors");
  EXPECT_TRUE(file.ok()) << file.status();
  return *file;
}

TEST(SpoolFileTest, ReadsWhatWasAppendedAtAnyOffset) {
  auto file = NewFile();
  ASSERT_TRUE(file->Append("hello ").ok());
  ASSERT_TRUE(file->Append("world").ok());
  char out[5];
  ASSERT_TRUE(file->ReadAt(6, absl::MakeSpan(out, 5)).ok());
  EXPECT_EQ(std::string(out, 5), "world");
  EXPECT_EQ(file->size(), 11u);
  EXPECT_EQ(file->ReadAt(8, absl::MakeSpan(out, 5)).code(), absl::StatusCode::kOutOfRange);
}

TEST(SpoolFileTest, WaitForReturnsOnceTheBytesArriveFromAnotherThread) {
  auto file = NewFile();
  std::thread writer([file] {
    for (int i = 0; i < 10; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      (void)file->Append(std::string(100, 'x'));
    }
    file->Complete();
  });
  EXPECT_TRUE(file->WaitFor(1000, nullptr).ok());
  writer.join();
  EXPECT_EQ(file->WaitFor(1001, nullptr).code(), absl::StatusCode::kOutOfRange);
}

TEST(SpoolFileTest, AFailedUploadWakesTheReaderWithItsReason) {
  auto file = NewFile();
  std::thread writer([file] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    file->Fail(absl::CancelledError("client gone"));
  });
  const absl::Status status = file->WaitFor(10, nullptr);
  writer.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(status.message()), HasSubstr("client gone"));
}

TEST(SpoolFileTest, AStalledUploadEndsAfterTheIdleTimeout) {
  auto file = NewFile();
  (void)file->Append("abc");
  const absl::Status status = file->WaitFor(10, nullptr, absl::Milliseconds(300));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(status.message()), HasSubstr("receive_idle_timeout_seconds"));
}

TEST(SpoolFileTest, CancellationEndsTheWait) {
  auto file = NewFile();
  std::atomic<bool> cancelled{false};
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    cancelled = true;
  });
  const absl::Status status = file->WaitFor(10, [&] { return cancelled.load(); });
  canceller.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
}

TEST(SpoolFileTest, NothingIsLeftInTheSpoolFolder) {
  char dir[] = "/tmp/bonsai-spool-test-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  {
    auto file = SpoolFile::Create(dir, "a");
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->Append(std::string(1 << 20, 'x')).ok());
  }
  EXPECT_EQ(rmdir(dir), 0) << "the spool folder was not empty";
}

TEST(ByteBudgetTest, ReservesReleasesAndRefusesWhatCanNeverFit) {
  ByteBudget budget("working memory", "max_memory_bytes", 100);
  auto first = budget.TryReserve(60);
  ASSERT_TRUE(first.ok() && *first != nullptr);
  auto second = budget.TryReserve(60);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, nullptr) << "does not fit now";
  auto never = budget.TryReserve(101);
  EXPECT_EQ(never.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(never.status().message()), HasSubstr("--max_memory_bytes"));
  first->reset();
  EXPECT_EQ(budget.in_use(), 0u);
  auto third = budget.TryReserve(100);
  EXPECT_TRUE(third.ok() && *third != nullptr);
}

TEST(ByteBudgetTest, AWaitingJobGetsItsShareWhenAnotherReleasesIt) {
  ByteBudget budget("working memory", "max_memory_bytes", 100);
  auto held = budget.TryReserve(80);
  ASSERT_TRUE(held.ok() && *held);
  std::thread releaser([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    held->reset();
  });
  auto waited = budget.Reserve(50, nullptr);
  releaser.join();
  ASSERT_TRUE(waited.ok());
  EXPECT_EQ(budget.in_use(), 50u);
}

}  // namespace
}  // namespace bonsai::storage
