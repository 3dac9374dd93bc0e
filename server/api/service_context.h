// What every handler shares: the engine's scheduler, the limits, and the
// registry of calls in progress.
#ifndef BONSAI_SERVER_API_SERVICE_CONTEXT_H_
#define BONSAI_SERVER_API_SERVICE_CONTEXT_H_

#include "server/api/active_calls.h"
#include "server/api/call_deadlines.h"
#include "server/api/peer_limits.h"
#include "server/api/service_options.h"
#include "server/storage/byte_budget.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {

struct ServiceContext {
  engine::JobScheduler* scheduler = nullptr;
  ServiceOptions options;
  ActiveCalls* calls = nullptr;
  PeerLimits* peers = nullptr;          // --max_jobs_per_peer
  CallDeadlines* deadlines = nullptr;   // --max_job_seconds
  storage::ByteBudget* spool = nullptr;   // disk: uploads and outputs
  storage::ByteBudget* memory = nullptr;  // working memory of running jobs
  // Uploads and outputs kept in memory instead of on disk, when a job's fit
  // (--memory_spool_bytes; carved out of the memory budget, not beside it).
  storage::ByteBudget* memory_spool = nullptr;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_SERVICE_CONTEXT_H_
