// The engine's core-lending policy and the loop mechanism it feeds.
#include "server/engine/core_lending.h"

#include <thread>

#include "gtest/gtest.h"
#include "server/tensor/run_in_parallel.h"

namespace bonsai::engine {
namespace {

TEST(CoreLending, LendsOnlyTheCoresNoJobIsComputingOn) {
  CoreLending lending(4);
  lending.SetComputingJobs(2);
  EXPECT_TRUE(lending.TryBorrow());
  EXPECT_TRUE(lending.TryBorrow());
  EXPECT_FALSE(lending.TryBorrow());  // 2 jobs + 2 helpers: every core busy
  lending.Return();
  EXPECT_TRUE(lending.TryBorrow());
  lending.SetComputingJobs(4);
  lending.Return();
  lending.Return();
  EXPECT_FALSE(lending.TryBorrow());
}

TEST(CoreLending, TheCallersThreadCountsAsBusyWhenNoJobRuns) {
  CoreLending lending(2);
  lending.SetComputingJobs(0);
  EXPECT_TRUE(lending.TryBorrow());
  EXPECT_FALSE(lending.TryBorrow());
}

TEST(CoreLending, RegistersWhileAliveAndLoopsStayHomeWithoutIt) {
  const auto second_runs_on_another_thread = [] {
    std::thread::id second;
    tensor::RunInParallel(true, [] {}, [&] { second = std::this_thread::get_id(); });
    return second != std::this_thread::get_id();
  };
  {
    CoreLending lending(2);
    EXPECT_EQ(tensor::core_lender(), &lending);
    EXPECT_TRUE(second_runs_on_another_thread());
    EXPECT_TRUE(lending.TryBorrow());  // the helper's core came back
    lending.Return();
  }
  EXPECT_EQ(tensor::core_lender(), nullptr);
  EXPECT_FALSE(second_runs_on_another_thread());
}

TEST(CoreLending, AOneCoreServerNeverLends) {
  CoreLending lending(1);
  std::thread::id second;
  tensor::RunInParallel(true, [] {}, [&] { second = std::this_thread::get_id(); });
  EXPECT_EQ(second, std::this_thread::get_id());
}

}  // namespace
}  // namespace bonsai::engine
