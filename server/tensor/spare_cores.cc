#include "server/tensor/spare_cores.h"

#include <algorithm>
#include <atomic>
#include <thread>

namespace bonsai::tensor {
namespace {

std::atomic<int> core_budget{static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
std::atomic<int> running_jobs{0};
std::atomic<int> borrowed{0};

// The caller's own thread counts as one busy core even outside a scheduler
// (benchmarks, tests).
bool TryBorrow() {
  int in_use = borrowed.load();
  for (;;) {
    if (std::max(1, running_jobs.load()) + in_use >= core_budget.load()) return false;
    if (borrowed.compare_exchange_weak(in_use, in_use + 1)) return true;
  }
}

}  // namespace

void SetCoreBudget(int cores) { core_budget = std::max(1, cores); }
void SetRunningJobs(int jobs) { running_jobs = jobs; }

void RunInParallel(bool worth_it, const std::function<void()>& first,
                   const std::function<void()>& second) {
  if (!worth_it || !TryBorrow()) {
    first();
    second();
    return;
  }
  std::thread helper(second);
  first();
  helper.join();
  --borrowed;
}

}  // namespace bonsai::tensor
