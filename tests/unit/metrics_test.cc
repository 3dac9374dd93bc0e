// The exposition a Prometheus scrape sees: names, labels, bounded values, and
// the gRPC interceptor counting codes through a real in-process server.
#include "server/observability/metrics.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <condition_variable>
#include <mutex>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/observability/grpc_metrics_interceptor.h"

namespace bonsai::observability {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(MetricsTest, ExpositionHasEveryFamilyBeforeTheFirstJob) {
  const std::string text = RenderMetricsText();
  for (const char* name :
       {"bonsai_job_stage_seconds_bucket", "bonsai_jobs_running", "bonsai_jobs_queued",
        "bonsai_workers", "bonsai_received_bytes_total", "bonsai_sent_bytes_total",
        "bonsai_model_bytes_bucket", "bonsai_compression_ratio_bucket", "bonsai_rejected_total",
        "bonsai_build_info{", "process_resident_memory_bytes", "process_cpu_seconds_total",
        "process_open_fds", "process_start_time_seconds"}) {
    EXPECT_THAT(text, HasSubstr(name));
  }
  EXPECT_THAT(text, HasSubstr(R"(bonsai_rejected_total{reason="queue_full"} 0)"));
}

TEST(MetricsTest, RecordedJobsAppearWithMethodFormatAndOutcome) {
  RecordJob("magnitude", "onnx", JobOutcome::kOk);
  RecordJob("wanda", "safetensors", JobOutcome::kCancelled);
  RecordStageSeconds(JobStage::kCompress, 0.2);
  RecordModelBytes(4096);
  RecordCompressionRatio(2.5);
  const std::string text = RenderMetricsText();
  EXPECT_THAT(text, HasSubstr(R"(bonsai_jobs_total{format="onnx",method="magnitude",outcome="ok"} 1)"));
  EXPECT_THAT(text,
              HasSubstr(R"(format="safetensors",method="wanda",outcome="cancelled"} 1)"));
  EXPECT_THAT(text, HasSubstr(R"(bonsai_job_stage_seconds_count{stage="compress"} 1)"));
  EXPECT_THAT(text, HasSubstr("bonsai_model_bytes_count 1"));
  EXPECT_THAT(text, HasSubstr("bonsai_compression_ratio_sum 2.5"));
}

TEST(MetricsTest, UnknownLabelValuesCollapseToOther) {
  RecordJob("a-model-name-from-a-client", "zip", JobOutcome::kInvalid);
  RecordRejected("some free text");
  const std::string text = RenderMetricsText();
  EXPECT_THAT(text, HasSubstr(R"(format="unknown",method="other",outcome="invalid")"));
  EXPECT_THAT(text, HasSubstr(R"(bonsai_rejected_total{reason="other"} 1)"));
  EXPECT_THAT(text, Not(HasSubstr("a-model-name-from-a-client")));
}

TEST(MetricsTest, GaugesTakeTheLastValue) {
  SetJobsRunning(3);
  SetJobsQueued(7);
  ASSERT_TRUE(StartMetricsEndpoint("", 4).ok());
  const std::string text = RenderMetricsText();
  EXPECT_THAT(text, HasSubstr("bonsai_jobs_running 3"));
  EXPECT_THAT(text, HasSubstr("bonsai_jobs_queued 7"));
  EXPECT_THAT(text, HasSubstr("bonsai_workers 4"));
}

TEST(MetricsTest, UnbindableMetricsAddressIsAnError) {
  EXPECT_FALSE(StartMetricsEndpoint("256.0.0.1:1", 1).ok());
}

// The health service is the one real service every bonsai server has, so it
// shows the interceptor at work without the engine.
TEST(GrpcMetricsInterceptorTest, CountsStartedHandledAndCodes) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.experimental().SetInterceptorCreators(MakeServerInterceptors());
  grpc::CallbackGenericService unknown_methods;  // answers UNIMPLEMENTED
  builder.RegisterCallbackGenericService(&unknown_methods);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  server->GetHealthCheckService()->SetServingStatus("bonsai.v1.Compressor", true);

  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                     grpc::InsecureChannelCredentials());
  grpc::GenericStub stub(channel);
  auto call = [&](const std::string& path, const std::string& service_name) {
    // grpc.health.v1.HealthCheckRequest{service=1:string}, hand-encoded.
    std::string req = std::string("\x0a", 1) + static_cast<char>(service_name.size()) + service_name;
    grpc::Slice slice(req);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext ctx;
    grpc::Status status;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    stub.UnaryCall(&ctx, path, grpc::StubOptions(), &request,
                   &response, [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = s;
                     done = true;
                     cv.notify_one();
                   });
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done; });
    return status.error_code();
  };
  const std::string check = "/grpc.health.v1.Health/Check";
  EXPECT_EQ(call(check, "bonsai.v1.Compressor"), grpc::StatusCode::OK);
  EXPECT_EQ(call(check, "no.such.Service"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(call("/scanner.Probe/Random123", ""), grpc::StatusCode::UNIMPLEMENTED);
  server->Shutdown();
  server->Wait();

  const std::string text = RenderMetricsText();
  const std::string labels =
      R"(grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary")";
  EXPECT_THAT(text, HasSubstr("grpc_server_started_total{" + labels + "} 2"));
  EXPECT_THAT(text, HasSubstr(R"(grpc_server_handled_total{grpc_code="OK",)" + labels + "} 1"));
  EXPECT_THAT(text,
              HasSubstr(R"(grpc_server_handled_total{grpc_code="NotFound",)" + labels + "} 1"));
  EXPECT_THAT(text, HasSubstr("grpc_server_handling_seconds_count{" + labels + "} 2"));
  EXPECT_THAT(text, HasSubstr("grpc_server_msg_received_total{" + labels + "} 2"));
  EXPECT_THAT(text, HasSubstr("grpc_server_msg_sent_total{" + labels + "}"));
  EXPECT_THAT(text, Not(HasSubstr("Random123")));
}

}  // namespace
}  // namespace bonsai::observability
