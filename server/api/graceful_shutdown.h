// SIGTERM's sequence, bounded whatever the calls are doing (idle streams,
// stalled uploads, clients that stop reading their output, jobs deep in a
// tensor): the process exits within the grace period plus kShutdownBound.
//
//   1. Health turns NOT_SERVING and admission closes: a new job's spec gets
//      UNAVAILABLE "shutting down; retry on another replica" from our own
//      handler, which the client retries elsewhere.
//   2. Admitted jobs have the grace period to finish.
//   3. Calls still open are aborted with UNAVAILABLE and get a moment to
//      send that status (a client that reads nothing cannot take it).
//   4. The process exits, and the kernel closes its connections.
//
// Why not gRPC's Server::Shutdown at step 4: it marks the server shut down
// before its GOAWAY reaches the clients, and a call that arrives in between
// is cancelled with a bare CANCELLED, which clients do not retry (seen: 1-2
// of ~250 new calls per shutdown under steady traffic). A closed connection
// instead fails such a call with UNAVAILABLE, which they do retry. Nothing
// is lost by skipping the destructors: uploads and outputs live in unlinked
// spool files, which the kernel frees, and every call has ended or has been
// told to go elsewhere.
//
// A watchdog ends the process with kWatchdogExitStatus if this has not
// happened within grace + kShutdownBound (e.g. a call whose abort hangs).
#ifndef BONSAI_SERVER_API_GRACEFUL_SHUTDOWN_H_
#define BONSAI_SERVER_API_GRACEFUL_SHUTDOWN_H_

#include <grpcpp/grpcpp.h>

#include "absl/time/time.h"
#include "server/api/active_calls.h"
#include "server/engine/job_scheduler.h"

namespace bonsai::api {

// How long after the grace period the process may take to exit.
inline constexpr absl::Duration kShutdownBound = absl::Seconds(10);
// Step 3: aborted calls' time to send their status.
inline constexpr absl::Duration kAbortedCallsDrain = absl::Seconds(2);
// The exit status when the watchdog has to end the process.
inline constexpr int kWatchdogExitStatus = 3;

// Runs steps 1-4 and never returns: the process exits with status 0.
[[noreturn]] void ShutDownGracefully(grpc::Server& server, engine::JobScheduler& scheduler,
                                     ActiveCalls& calls, absl::Duration grace);

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_GRACEFUL_SHUTDOWN_H_
