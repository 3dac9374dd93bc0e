#include "server/observability/grpc_metrics_interceptor.h"

#include <grpcpp/server_context.h>
#include <grpcpp/support/interceptor.h>
#include <grpcpp/support/status.h>

#include <array>
#include <atomic>
#include <chrono>
#include <string>

#include "google/protobuf/descriptor.h"
#include "prometheus/counter.h"
#include "prometheus/histogram.h"
#include "server/observability/registry.h"

namespace bonsai::observability {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::ServerRpcInfo;
using prometheus::Counter;
using prometheus::Histogram;
using prometheus::Labels;

// The spelling of go-grpc-prometheus (Go's codes.Code.String()), which the
// usual gRPC dashboards and alerts match on: grpc_code=~"Unknown|Internal|...".
constexpr std::array<const char*, 17> kCodeNames = {
    "OK",         "Canceled",          "Unknown",      "InvalidArgument", "DeadlineExceeded",
    "NotFound",   "AlreadyExists",     "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted",   "OutOfRange",   "Unimplemented",   "Internal",
    "Unavailable", "DataLoss",         "Unauthenticated"};

std::string CodeName(grpc::StatusCode code) {
  const auto i = static_cast<size_t>(code);
  return i < kCodeNames.size() ? kCodeNames[i] : "Unknown";
}

const char* TypeName(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY:
      return "unary";
    case ServerRpcInfo::Type::CLIENT_STREAMING:
      return "client_stream";
    case ServerRpcInfo::Type::SERVER_STREAMING:
      return "server_stream";
    case ServerRpcInfo::Type::BIDI_STREAMING:
      return "bidi_stream";
  }
  return "unknown";
}

struct GrpcFamilies {
  explicit GrpcFamilies(prometheus::Registry& r)
      : started(prometheus::BuildCounter()
                    .Name("grpc_server_started_total")
                    .Help("Total number of RPCs started on the server.")
                    .Register(r)),
        handled(prometheus::BuildCounter()
                    .Name("grpc_server_handled_total")
                    .Help("Total number of RPCs completed on the server, regardless of success "
                          "or failure.")
                    .Register(r)),
        handling_seconds(prometheus::BuildHistogram()
                             .Name("grpc_server_handling_seconds")
                             .Help("Histogram of response latency (seconds) of gRPC that had "
                                   "been application-level handled by the server.")
                             .Register(r)),
        msg_received(prometheus::BuildCounter()
                         .Name("grpc_server_msg_received_total")
                         .Help("Total number of RPC stream messages received on the server.")
                         .Register(r)),
        msg_sent(prometheus::BuildCounter()
                     .Name("grpc_server_msg_sent_total")
                     .Help("Total number of gRPC stream messages sent by the server.")
                     .Register(r)) {}

  prometheus::Family<Counter>& started;
  prometheus::Family<Counter>& handled;
  prometheus::Family<Histogram>& handling_seconds;
  prometheus::Family<Counter>& msg_received;
  prometheus::Family<Counter>& msg_sent;
};

GrpcFamilies& Families() {
  static GrpcFamilies* families = new GrpcFamilies(*MetricsRegistry());
  return *families;
}

// Compression jobs run for minutes, so the buckets reach ten minutes.
const Histogram::BucketBoundaries& HandlingBuckets() {
  static const Histogram::BucketBoundaries buckets = {
      0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  return buckets;
}

// A client may call any path; only methods this binary implements become label
// values, so a scanner cannot grow the number of series.
bool IsKnownMethod(const std::string& service, const std::string& method) {
  // The built-in health service is generated with upb, outside protobuf's pool.
  if (service == "grpc.health.v1.Health") return method == "Check" || method == "Watch";
  return google::protobuf::DescriptorPool::generated_pool()->FindMethodByName(
             service + "." + method) != nullptr;
}

// One per RPC. Hooks of one RPC may run on different threads (a bidi stream
// reads and writes at once), hence the atomics.
class MetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit MetricsInterceptor(ServerRpcInfo* info)
      : start_(std::chrono::steady_clock::now()),
        labels_(LabelsOf(info)),
        context_(info->server_context()) {
    auto& f = Families();
    f.started.Add(labels_).Increment();
    received_ = &f.msg_received.Add(labels_);
    sent_ = &f.msg_sent.Add(labels_);
  }

  // An RPC the client cancelled never reaches PRE_SEND_STATUS; it ends here.
  ~MetricsInterceptor() override { RecordHandled(grpc::StatusCode::CANCELLED); }

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE) &&
        methods->GetRecvMessage() != nullptr) {
      received_->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_SEND_MESSAGE) &&
        methods->GetSendMessageStatus()) {
      sent_->Increment();
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      // A handler that notices the client left still finishes with a status
      // of its own (its read failed, say), which the client never sees; what
      // happened to the call is that it was cancelled.
      RecordHandled(context_ != nullptr && context_->IsCancelled()
                        ? grpc::StatusCode::CANCELLED
                        : methods->GetSendStatus().error_code());
    }
    methods->Proceed();
  }

 private:
  static Labels LabelsOf(ServerRpcInfo* info) {
    // "/bonsai.v1.Compressor/Compress" -> service, method.
    const std::string full = info->method() != nullptr ? info->method() : "";
    std::string service = "unknown", method = "unknown";
    const auto slash = full.rfind('/');
    if (full.size() > 1 && full[0] == '/' && slash != std::string::npos && slash > 1) {
      service = full.substr(1, slash - 1);
      method = full.substr(slash + 1);
    }
    if (!IsKnownMethod(service, method)) service = method = "unknown";
    return {{"grpc_service", service}, {"grpc_method", method},
            {"grpc_type", TypeName(info->type())}};
  }

  void RecordHandled(grpc::StatusCode code) {
    if (handled_.exchange(true)) return;
    auto& f = Families();
    Labels with_code = labels_;
    with_code["grpc_code"] = CodeName(code);
    f.handled.Add(with_code).Increment();
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start_;
    f.handling_seconds.Add(labels_, HandlingBuckets()).Observe(elapsed.count());
  }

  const std::chrono::steady_clock::time_point start_;
  const Labels labels_;
  grpc::ServerContextBase* const context_;
  Counter* received_ = nullptr;
  Counter* sent_ = nullptr;
  std::atomic<bool> handled_{false};
};

class MetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new MetricsInterceptor(info);
  }
};

}  // namespace

std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
MakeServerInterceptors() {
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> out;
  out.push_back(std::make_unique<MetricsInterceptorFactory>());
  return out;
}

}  // namespace bonsai::observability
