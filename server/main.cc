// bonsai-server: flags, wiring, signals; nothing else.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/api/active_calls.h"
#include "server/api/call_deadlines.h"
#include "server/api/peer_limits.h"
#include "server/api/compressor_service.h"
#include "server/api/graceful_shutdown.h"
#include "server/api/server_credentials.h"
#include "server/engine/job_scheduler.h"
#include "server/methods/method_config.h"
#include "server/observability/grpc_metrics_interceptor.h"
#include "server/observability/job_log.h"
#include "server/observability/log.h"
#include "server/storage/allocator_tuning.h"
#include "server/observability/metrics.h"
#include "server/storage/byte_budget.h"
#include "server/storage/system_limits.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:50051", "gRPC address to serve on (port 0: any free port)");
ABSL_FLAG(std::string, metrics_listen, "0.0.0.0:9464",
          "address of the Prometheus /metrics endpoint; empty to disable");
ABSL_FLAG(int, workers, 0,
          "compression worker threads, and the cores jobs use in all (a job may borrow "
          "idle workers' cores); 0 means one per core");
ABSL_FLAG(int, max_queued_jobs, -1,
          "jobs admitted beyond the running ones (uploading or waiting for a worker); "
          "-1 means 2 per worker. Past it, calls get RESOURCE_EXHAUSTED at once");
ABSL_FLAG(int, max_jobs_per_peer, -1,
          "jobs one client address (without port) may have admitted at once, so that one "
          "client cannot take every slot; -1 means all slots but one (workers + "
          "max_queued_jobs - 1), so a lone client keeps every core busy and another always "
          "finds a slot (no cap on a server with one slot, which cannot share it); 0 means no "
          "cap (behind an L7 proxy every client has the proxy's address). Past it, "
          "RESOURCE_EXHAUSTED");
ABSL_FLAG(double, max_job_seconds, 3600,
          "longest a job may take from admission to its last byte out, whatever the client's "
          "deadline; past it, DEADLINE_EXCEEDED. 0 means no cap");
ABSL_FLAG(uint64_t, max_model_bytes, 4ull << 30, "largest model upload accepted, in bytes");
ABSL_FLAG(uint64_t, max_calibration_bytes, 1ull << 30,
          "largest calibration upload accepted, in bytes");
ABSL_FLAG(std::string, spool_dir, "",
          "folder for uploads and outputs on disk (unlinked files: nothing is left behind); "
          "empty means $TMPDIR or /tmp");
ABSL_FLAG(uint64_t, max_spool_bytes, 0,
          "disk the spool may use over all jobs (each job takes 3x its model plus its "
          "calibration); 0 means 9/10 of the spool folder's free space at start");
ABSL_FLAG(uint64_t, max_memory_bytes, 0,
          "working memory over all running jobs, estimated per job from its largest tensor, "
          "method and calibration; a job that does not fit waits, one that never fits is refused. "
          "0 means 7/8 of the memory limit (cgroup or RAM) less 128 MiB");
constexpr uint64_t kMemorySpoolFromBudget = 4ull << 30;
ABSL_FLAG(int64_t, memory_spool_bytes, -1,
          "memory over all jobs for uploads and outputs kept in memory instead of on the spool "
          "disk (a job uses it when its files, 3x its model plus its calibration, fit when it "
          "arrives; else the disk spool). It is taken out of the memory budget, not added to it. "
          "-1: a quarter of the memory budget when --max_memory_bytes is 0 and the budget is at "
          "least 4 GiB, else none; 0: always on disk");
ABSL_FLAG(uint64_t, max_files, 4096, "files in one job (a sharded checkpoint's shards and others)");
ABSL_FLAG(double, receive_idle_timeout_seconds, 60,
          "a job whose upload sends no byte for this long is ended with DEADLINE_EXCEEDED");
ABSL_FLAG(int, max_connection_age_seconds, 0,
          "close each client connection (GOAWAY) after this long, letting its calls finish, so "
          "clients reconnect and resolve the Service again: they see replicas added since. "
          "0: never");
ABSL_FLAG(int, shutdown_grace_seconds, 30,
          "on SIGTERM/SIGINT, how long running jobs may take to finish before they are "
          "cancelled with UNAVAILABLE; the process exits at most 10 s after it, whatever its "
          "calls are doing");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the gRPC port; with --tls_key_file the port serves TLS "
          "(the metrics endpoint stays plaintext). Empty: plaintext");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, log_format, "text",
          "log lines on stderr: text (time level message) or json (one object per line); "
          "each finished call logs one line with its id, peer, method, format, bytes and status");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificate(s); when set, clients must present a certificate signed by one "
          "of them (mutual TLS)");

namespace {

using bonsai::observability::LogInfo;

int WorkerCount() {
  const int flag = absl::GetFlag(FLAGS_workers);
  if (flag > 0) return flag;
  const unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? static_cast<int>(cores) : 1;
}

// SIGTERM/SIGINT write to a pipe that one thread waits on. A handler, not a
// blocked-signal mask: OpenBLAS starts threads when it loads, before main
// could block anything, and a signal delivered to one of those would take
// the default action and kill the process.
int stop_pipe[2] = {-1, -1};

void OnStopSignal(int signal_number) {
  const char byte = static_cast<char>(signal_number);
  [[maybe_unused]] ssize_t written = write(stop_pipe[1], &byte, 1);
}

bool InstallStopHandlers() {
  if (pipe(stop_pipe) != 0) return false;
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  return sigaction(SIGTERM, &action, nullptr) == 0 && sigaction(SIGINT, &action, nullptr) == 0;
}

int WaitForStopSignal() {
  char byte = 0;
  while (read(stop_pipe[0], &byte, 1) < 0 && errno == EINTR) {
  }
  return byte;
}

}  // namespace

// --help lists bonsai's own flags (Abseil's default matches flags to the
// binary's file name, which finds none); --helpfull adds Abseil's.
void ConfigureUsage() {
  absl::SetProgramUsageMessage(
      "a gRPC service that prunes, sparsifies and quantizes ONNX and "
      "safetensors models.\nUsage: bonsai-server [--listen=0.0.0.0:50051] [--workers=N] ...\n"
      "--version prints the version and build; --helpfull lists every flag.");
  absl::FlagsUsageConfig config;
  const auto ours = [](absl::string_view file) { return absl::StrContains(file, "server/"); };
  config.contains_help_flags = ours;
  config.contains_helpshort_flags = ours;
  config.version_string = [] {
    return absl::StrCat("bonsai-server ", bonsai::observability::BuildVersion(), " (revision ",
                        bonsai::observability::BuildRevision(), ")\n");
  };
  absl::SetFlagsUsageConfig(config);
}

int main(int argc, char** argv) {
  ConfigureUsage();
  absl::ParseCommandLine(argc, argv);
  {
    std::vector<std::string> methods;
    for (const auto& method : bonsai::methods::DescribeMethods()) methods.push_back(method.name);
    bonsai::observability::SetMethodLabels(std::move(methods));
  }
  if (auto format = bonsai::observability::ParseLogFormat(absl::GetFlag(FLAGS_log_format));
      format.ok()) {
    bonsai::observability::SetLogFormat(*format);
  } else {
    bonsai::observability::LogError(std::string(format.status().message()));
    return 1;
  }
  bonsai::storage::TuneAllocatorForStreaming();
  if (!InstallStopHandlers()) {
    bonsai::observability::LogError("could not install the SIGTERM/SIGINT handlers");
    return 1;
  }

  // Checked before anything listens: a TLS mistake is a start-up error, never
  // a server that quietly serves plaintext.
  const auto port_credentials = bonsai::api::BuildPortCredentials(
      {absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
       absl::GetFlag(FLAGS_tls_client_ca_file)});
  if (!port_credentials.ok()) {
    bonsai::observability::LogError(std::string(port_credentials.status().message()));
    return 1;
  }

  const int workers = WorkerCount();
  int max_queued = absl::GetFlag(FLAGS_max_queued_jobs);
  if (max_queued < 0) max_queued = 2 * workers;

  if (auto status = bonsai::observability::StartMetricsEndpoint(
          absl::GetFlag(FLAGS_metrics_listen), workers);
      !status.ok()) {
    bonsai::observability::LogError(absl::StrCat("metrics endpoint: ", status.message()));
    return 1;
  }

  // Destroyed (its threads joined) before anything a job still holds: the
  // budgets, the peer limits and the calls registry outlive every job.
  auto scheduler = std::make_unique<bonsai::engine::JobScheduler>(workers, max_queued);
  std::string spool_dir = absl::GetFlag(FLAGS_spool_dir);
  if (spool_dir.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    spool_dir = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  uint64_t spool_bytes = absl::GetFlag(FLAGS_max_spool_bytes);
  if (spool_bytes == 0) spool_bytes = bonsai::storage::DefaultSpoolBudget(spool_dir);
  uint64_t memory_bytes = absl::GetFlag(FLAGS_max_memory_bytes);
  int64_t memory_spool_bytes = absl::GetFlag(FLAGS_memory_spool_bytes);
  if (memory_bytes == 0) {
    memory_bytes = bonsai::storage::DefaultMemoryBudget();
    // Only where a quarter can be spared: a small server keeps its whole
    // budget for working sets (the chart's 2760Mi pod: two 256Mi tensors).
    if (memory_spool_bytes < 0 && memory_bytes >= kMemorySpoolFromBudget) {
      memory_spool_bytes = static_cast<int64_t>(memory_bytes / 4);
    }
  }
  // Carved out of the memory budget: memfd pages count in the cgroup as
  // working memory does, and cannot be written back under pressure.
  memory_spool_bytes =
      std::clamp<int64_t>(memory_spool_bytes, 0, static_cast<int64_t>(memory_bytes));
  memory_bytes -= static_cast<uint64_t>(memory_spool_bytes);
  bonsai::storage::ByteBudget spool("spool disk", "max_spool_bytes", spool_bytes);
  bonsai::storage::ByteBudget memory("working memory", "max_memory_bytes", memory_bytes);
  bonsai::storage::ByteBudget memory_spool("memory spool", "memory_spool_bytes",
                                           static_cast<uint64_t>(memory_spool_bytes));
  int max_per_peer = absl::GetFlag(FLAGS_max_jobs_per_peer);
  if (max_per_peer < 0) max_per_peer = workers + max_queued - 1;  // 0 for one slot: no cap
  bonsai::api::PeerLimits peers(max_per_peer);
  bonsai::api::CallDeadlines deadlines;
  bonsai::api::ActiveCalls calls;
  bonsai::observability::SetAdmittedJobsSource([&calls] { return calls.CountByStage(); });
  bonsai::api::ServiceContext context;
  context.scheduler = scheduler.get();
  context.calls = &calls;
  context.peers = &peers;
  context.deadlines = &deadlines;
  context.options.max_job_seconds = absl::GetFlag(FLAGS_max_job_seconds);
  context.options.max_model_bytes = absl::GetFlag(FLAGS_max_model_bytes);
  context.options.max_calibration_bytes = absl::GetFlag(FLAGS_max_calibration_bytes);
  context.options.max_files = absl::GetFlag(FLAGS_max_files);
  context.options.spool_dir = spool_dir;
  context.options.receive_idle_timeout_seconds = absl::GetFlag(FLAGS_receive_idle_timeout_seconds);
  context.spool = &spool;
  context.memory = &memory;
  context.memory_spool = memory_spool_bytes > 0 ? &memory_spool : nullptr;
  bonsai::api::CompressorService service(context);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), port_credentials->credentials, &port);
  builder.RegisterService(&service);
  builder.experimental().SetInterceptorCreators(bonsai::observability::MakeServerInterceptors());
  // Chunks are limited to 4 MiB by the handler, which says so clearly; the
  // transport allows more so that the handler gets to say it.
  builder.SetMaxReceiveMessageSize(16 << 20);
  // Detect vanished peers so their jobs are cancelled and memory freed.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  if (const int age = absl::GetFlag(FLAGS_max_connection_age_seconds); age > 0) {
    // Calls in flight keep their connection until they end (the grace is
    // left unbounded): a long job is never cut by the age.
    builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                               static_cast<int>(std::min<int64_t>(int64_t{age} * 1000, INT32_MAX)));
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    bonsai::observability::LogError(
        absl::StrCat("could not listen on ", absl::GetFlag(FLAGS_listen)));
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);

  // The ports actually bound, so ":0" in a flag shows the port it got.
  const auto bound = [](std::string address, int bound_port) {
    return absl::StrCat(address.substr(0, address.rfind(':')), ":", bound_port);
  };
  const std::string metrics = absl::GetFlag(FLAGS_metrics_listen).empty()
                                  ? std::string("off")
                                  : bound(absl::GetFlag(FLAGS_metrics_listen),
                                          bonsai::observability::BoundMetricsPort());
  std::printf(
      "bonsai-server ready on %s (workers=%d, max_queued_jobs=%d, max_jobs_per_peer=%d, "
      "max_memory_bytes=%llu, memory_spool_bytes=%lld, spool=%s, max_spool_bytes=%llu, tls=%s, "
      "metrics=%s)\n",
      bound(absl::GetFlag(FLAGS_listen), port).c_str(), workers, max_queued, max_per_peer,
      static_cast<unsigned long long>(memory_bytes), static_cast<long long>(memory_spool_bytes),
      spool_dir.c_str(),
      static_cast<unsigned long long>(spool_bytes),
      std::string(bonsai::api::TlsModeName(port_credentials->mode)).c_str(), metrics.c_str());
  std::fflush(stdout);

  std::thread signal_thread([&] {
    const int signal_number = WaitForStopSignal();
    LogInfo(absl::StrCat("received signal ", signal_number, "; shutting down"));
    bonsai::api::ShutDownGracefully(*server, *scheduler, calls,
                                    absl::Seconds(absl::GetFlag(FLAGS_shutdown_grace_seconds)));
  });
  signal_thread.detach();
  // The process ends in ShutDownGracefully (which says why it does not go
  // through Server::Shutdown); Wait returns only if gRPC stops on its own.
  server->Wait();
  scheduler.reset();
  bonsai::observability::SetAdmittedJobsSource(nullptr);
  bonsai::observability::LogError("the gRPC server stopped without a signal");
  return 1;
}
