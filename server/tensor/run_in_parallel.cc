#include "server/tensor/run_in_parallel.h"

#include <atomic>
#include <thread>

namespace bonsai::tensor {
namespace {

std::atomic<CoreLender*> lender{nullptr};

}  // namespace

void SetCoreLender(CoreLender* new_lender) { lender = new_lender; }
CoreLender* core_lender() { return lender.load(); }

void RunInParallel(bool worth_it, const std::function<void()>& first,
                   const std::function<void()>& second) {
  CoreLender* const from = worth_it ? lender.load() : nullptr;
  if (from == nullptr || !from->TryBorrow()) {
    first();
    second();
    return;
  }
  std::thread helper(second);
  first();
  helper.join();
  from->Return();
}

}  // namespace bonsai::tensor
