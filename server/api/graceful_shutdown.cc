#include "server/api/graceful_shutdown.h"

#include <grpcpp/health_check_service_interface.h>

#include <unistd.h>

#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/engine/error_reason.h"
#include "server/observability/log.h"

namespace bonsai::api {
namespace {

using observability::LogError;
using observability::LogInfo;

// True once no call is left, false at `deadline`.
bool WaitForCalls(const ActiveCalls& calls, absl::Time deadline) {
  while (calls.size() > 0) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(50));
  }
  return true;
}

void StartWatchdog(absl::Duration limit) {
  std::thread([limit] {
    absl::SleepFor(limit);
    LogError(absl::StrCat("shutdown did not finish within ", absl::FormatDuration(limit),
                          " of the signal; exiting now"));
    // _exit: no destructor may wait on what is stuck.
    _exit(kWatchdogExitStatus);
  }).detach();
}

}  // namespace

void ShutDownGracefully(grpc::Server& server, engine::JobScheduler& scheduler,
                        ActiveCalls& calls, absl::Duration grace) {
  StartWatchdog(grace + kShutdownBound);
  server.GetHealthCheckService()->SetServingStatus(false);
  scheduler.Close();
  if (!WaitForCalls(calls, absl::Now() + grace)) {
    LogInfo(absl::StrCat("grace period over; ending ", calls.size(), " call(s) with UNAVAILABLE"));
    calls.AbortAll(engine::WithReason(
        absl::UnavailableError("the server is shutting down; retry the job on another replica"),
        engine::ErrorReason::kShuttingDown));
    if (!WaitForCalls(calls, absl::Now() + kAbortedCallsDrain)) {
      LogInfo(absl::StrCat(calls.size(), " call(s) could not send their status (clients not "
                           "reading); their connections close"));
    }
  }
  LogInfo("stopped");
  std::fflush(stdout);
  std::fflush(stderr);
  _exit(0);
}

}  // namespace bonsai::api
