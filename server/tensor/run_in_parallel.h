// Running two halves of a data-parallel loop side by side, on a core the
// engine lends. The mechanism is here, beside the loops that use it; the
// policy (which cores are idle, so a busy server is never oversubscribed) is
// the engine's: engine/core_lending.h.
#ifndef BONSAI_SERVER_TENSOR_RUN_IN_PARALLEL_H_
#define BONSAI_SERVER_TENSOR_RUN_IN_PARALLEL_H_

#include <cstddef>
#include <functional>

namespace bonsai::tensor {

// Elements a memory-bound loop should have (16 MiB of float32) before it is
// worth a thread: below that, starting one costs more than it saves.
inline constexpr size_t kWorthASecondCore = size_t{1} << 22;

// Says whether a core may be borrowed now, and takes it back.
class CoreLender {
 public:
  virtual ~CoreLender() = default;
  virtual bool TryBorrow() = 0;
  virtual void Return() = 0;
};

// The process's lender (one per process: the job scheduler's); null, the
// default, lends nothing and every loop stays on its caller's thread.
void SetCoreLender(CoreLender* lender);
CoreLender* core_lender();

// Runs `first` on this thread and `second` on a borrowed core when
// `worth_it` and the lender has one; otherwise both here, first then second.
// The two must touch disjoint data: the result is the same either way.
void RunInParallel(bool worth_it, const std::function<void()>& first,
                   const std::function<void()>& second);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_RUN_IN_PARALLEL_H_
