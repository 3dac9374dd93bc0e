// One global threshold over several jobs: when a client spreads one
// checkpoint's shards over several replicas (CompressionSpec.
// exchange_global_cuts), each job settles its global magnitude groups with
// the client instead of on its own, in two rounds of exact, additive
// summaries (tensor/magnitude_histogram.h):
//   1. the job sends each group's weight count and coarse histogram; the
//      client sums them over every job and answers with the bucket that
//      holds the k-th smallest |w| of the whole model;
//   2. the job sends the fine histogram inside that bucket; the client sums
//      again, which pins the threshold bits, and answers with the cut: the
//      threshold and how many weights equal to it this job prunes.
// A single job prunes the first ties in its order (shards in name order,
// tensors in data order); the client hands the ties out shard by shard in
// that same order, so the masks are those of one job over the folder.
#ifndef BONSAI_SERVER_ENGINE_GLOBAL_EXCHANGE_H_
#define BONSAI_SERVER_ENGINE_GLOBAL_EXCHANGE_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/cancellation.h"
#include "server/engine/job_plan.h"
#include "server/engine/job_scheduler.h"
#include "server/formats/model.h"

namespace bonsai::engine {

// The job's line to its client (the Compress stream).
class GlobalCutExchange {
 public:
  virtual ~GlobalCutExchange() = default;
  // Sends `summary` and waits for the client's decision for its phase.
  virtual absl::StatusOr<v1::GlobalDecision> Exchange(v1::GlobalSummary summary) = 0;
};

// Both rounds, for every global-scope magnitude group of the plan (a job
// with none still sends both summaries, empty, so the client can count
// every job in); each group's method then holds its cut and needs no
// observation pass. InvalidArgument when a decision does not fit the
// summary it answers.
absl::Status SettleGlobalCutsWithClient(formats::Model& model, CompressionPlan& plan,
                                        GlobalCutExchange& exchange, CoreGate* cores,
                                        const CancellationToken& cancel);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_GLOBAL_EXCHANGE_H_
