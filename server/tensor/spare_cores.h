// Cores a job may borrow for a data-parallel loop. One job on an otherwise
// idle server then uses the machine, and a busy server is never
// oversubscribed: the job scheduler says how many cores it runs jobs on and
// how many jobs are running, and a loop takes a helper thread only while
// running jobs + borrowed helpers < cores.
#ifndef BONSAI_SERVER_TENSOR_SPARE_CORES_H_
#define BONSAI_SERVER_TENSOR_SPARE_CORES_H_

#include <cstddef>
#include <functional>

namespace bonsai::tensor {

// Elements a memory-bound loop should have (16 MiB of float32) before it is
// worth a thread: below that, starting one costs more than it saves.
inline constexpr size_t kWorthASecondCore = size_t{1} << 22;

// Set by the job scheduler: its worker count (the cores it may use; by
// default the machine's) and the jobs running now.
void SetCoreBudget(int cores);
void SetRunningJobs(int jobs);

// Runs `first` on this thread and `second` on a borrowed core when
// `worth_it` and a core is idle; otherwise both here, first then second.
// The two must touch disjoint data.
void RunInParallel(bool worth_it, const std::function<void()>& first,
                   const std::function<void()>& second);

}  // namespace bonsai::tensor

#endif  // BONSAI_SERVER_TENSOR_SPARE_CORES_H_
