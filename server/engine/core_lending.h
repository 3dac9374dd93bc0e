// The engine's policy for lending cores to a job's data-parallel loops
// (tensor/run_in_parallel.h): a loop takes a helper thread only while jobs
// computing + helpers lent < the cores the scheduler runs jobs on. One job
// on an otherwise idle server then uses the machine, and a busy server is
// never oversubscribed.
#ifndef BONSAI_SERVER_ENGINE_CORE_LENDING_H_
#define BONSAI_SERVER_ENGINE_CORE_LENDING_H_

#include <atomic>

#include "server/tensor/run_in_parallel.h"

namespace bonsai::engine {

class CoreLending final : public tensor::CoreLender {
 public:
  // Registers itself as the process's lender until destroyed.
  explicit CoreLending(int cores);
  ~CoreLending() override;
  CoreLending(const CoreLending&) = delete;
  CoreLending& operator=(const CoreLending&) = delete;

  // Jobs computing now (the scheduler's count). The caller's own thread
  // counts as one busy core even when no job runs (benchmarks, tests).
  void SetComputingJobs(int jobs) { computing_ = jobs; }

  bool TryBorrow() override;
  void Return() override { --lent_; }

 private:
  const int cores_;
  std::atomic<int> computing_{0};
  std::atomic<int> lent_{0};
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_CORE_LENDING_H_
