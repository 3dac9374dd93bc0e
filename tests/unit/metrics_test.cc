// The exposition a Prometheus scrape sees: names, labels, bounded values, and
// the gRPC interceptor counting codes through a real in-process server.
#include "server/observability/metrics.h"

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>

#include <algorithm>
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

// The value of one series in the exposition, or -1 when it is absent. Tests
// compare before and after, since every test of the binary shares one registry.
double Sample(const std::string& series) {
  const std::string text = RenderMetricsText();
  const std::string key = series + " ";
  for (size_t at = text.find(key); at != std::string::npos; at = text.find(key, at + 1)) {
    if (at == 0 || text[at - 1] == '\n') return std::stod(text.substr(at + key.size()));
  }
  return -1;
}

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
  const std::string ok = R"(bonsai_jobs_total{format="onnx",method="magnitude",outcome="ok"})";
  const std::string cancelled =
      R"(bonsai_jobs_total{format="safetensors",method="wanda",outcome="cancelled"})";
  const std::string compress = R"(bonsai_job_stage_seconds_count{stage="compress"})";
  const double ok_before = std::max(0.0, Sample(ok));
  const double cancelled_before = std::max(0.0, Sample(cancelled));
  const double compress_before = Sample(compress);
  const double models_before = Sample("bonsai_model_bytes_count");
  SetMethodLabels({"magnitude", "wanda"});
  RecordJob("magnitude", "onnx", JobOutcome::kOk);
  RecordJob("wanda", "safetensors", JobOutcome::kCancelled);
  RecordStageSeconds(JobStage::kCompress, 0.2);
  RecordModelBytes(4096);
  RecordCompressionRatio(2.5);
  EXPECT_EQ(Sample(ok), ok_before + 1);
  EXPECT_EQ(Sample(cancelled), cancelled_before + 1);
  EXPECT_EQ(Sample(compress), compress_before + 1);
  EXPECT_EQ(Sample("bonsai_model_bytes_count"), models_before + 1);
  EXPECT_GE(Sample("bonsai_compression_ratio_sum"), 2.5);
}

TEST(MetricsTest, MethodLabelsComeFromTheListSetAtStartPlusRecipeAndInspect) {
  SetMethodLabels({"magnitude", "gptq"});
  const std::string recipe = R"(bonsai_jobs_total{format="safetensors",method="recipe",outcome="ok"})";
  const std::string inspect = R"(bonsai_jobs_total{format="onnx",method="inspect",outcome="ok"})";
  const std::string gptq = R"(bonsai_jobs_total{format="onnx",method="gptq",outcome="failed"})";
  const double recipe_before = std::max(0.0, Sample(recipe));
  const double inspect_before = std::max(0.0, Sample(inspect));
  const double gptq_before = std::max(0.0, Sample(gptq));
  RecordJob("recipe", "safetensors", JobOutcome::kOk);
  RecordJob("inspect", "onnx", JobOutcome::kOk);
  RecordJob("gptq", "onnx", JobOutcome::kFailed);
  RecordJob("wanda", "onnx", JobOutcome::kFailed);  // not in this server's list
  EXPECT_EQ(Sample(recipe), recipe_before + 1);
  EXPECT_EQ(Sample(inspect), inspect_before + 1);
  EXPECT_EQ(Sample(gptq), gptq_before + 1);
  EXPECT_THAT(RenderMetricsText(), HasSubstr(R"(format="onnx",method="other",outcome="failed")"));
}

TEST(MetricsTest, UnknownLabelValuesCollapseToOther) {
  const std::string other = R"(bonsai_rejected_total{reason="other"})";
  const double other_before = std::max(0.0, Sample(other));
  RecordJob("a-model-name-from-a-client", "zip", JobOutcome::kInvalid);
  RecordRejected("some free text");
  const std::string text = RenderMetricsText();
  EXPECT_THAT(text, HasSubstr(R"(format="unknown",method="other",outcome="invalid")"));
  EXPECT_EQ(Sample(other), other_before + 1);
  EXPECT_THAT(text, Not(HasSubstr("a-model-name-from-a-client")));
  EXPECT_THAT(text, Not(HasSubstr("some free text")));
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

TEST(MetricsTest, AdmittedJobsAreCountedByStageFromTheSourceAtEachScrape) {
  // No source (a server not started, or one that is stopping): every stage
  // is still exposed, at zero, so the alert's ratio is defined.
  SetAdmittedJobsSource(nullptr);
  for (const char* stage : {"receiving", "queued", "running", "sending"}) {
    EXPECT_EQ(Sample(std::string("bonsai_jobs_admitted{stage=\"") + stage + "\"}"), 0) << stage;
  }
  AdmittedJobCounts counts = {5, 0, 1, 2};
  SetAdmittedJobsSource([&counts] { return counts; });
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="receiving"})"), 5);
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="running"})"), 1);
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="sending"})"), 2);
  counts = {0, 3, 0, 0};  // read again at the next scrape, not cached
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="receiving"})"), 0);
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="queued"})"), 3);
  SetAdmittedJobsSource(nullptr);
  EXPECT_EQ(Sample(R"(bonsai_jobs_admitted{stage="queued"})"), 0);
}

TEST(MetricsTest, JobSlotsGaugeAndPeerLimitReasonExist) {
  SetJobSlots(6);
  EXPECT_EQ(Sample("bonsai_job_slots"), 6);
  EXPECT_GE(Sample(R"(bonsai_rejected_total{reason="peer_limit"})"), 0);
}

TEST(MetricsTest, UnbindableMetricsAddressIsAnError) {
  EXPECT_FALSE(StartMetricsEndpoint("256.0.0.1:1", 1).ok());
}

// The health service is the one real service every bonsai server has, so it
// shows the interceptor at work without the engine.
TEST(GrpcMetricsInterceptorTest, CountsStartedHandledCodesAndMessages) {
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
  const std::string labels =
      R"(grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary")";
  const std::string started = "grpc_server_started_total{" + labels + "}";
  const std::string ok = R"(grpc_server_handled_total{grpc_code="OK",)" + labels + "}";
  const std::string not_found = R"(grpc_server_handled_total{grpc_code="NotFound",)" + labels + "}";
  const std::string timed = "grpc_server_handling_seconds_count{" + labels + "}";
  const std::string received = "grpc_server_msg_received_total{" + labels + "}";
  const std::string unknown =
      R"(grpc_server_started_total{grpc_method="unknown",grpc_service="unknown",grpc_type="bidi_stream"})";
  auto base = [](const std::string& series) { return std::max(0.0, Sample(series)); };
  const double started_before = base(started), ok_before = base(ok),
               not_found_before = base(not_found), timed_before = base(timed),
               received_before = base(received), unknown_before = base(unknown);
  EXPECT_EQ(call(check, "bonsai.v1.Compressor"), grpc::StatusCode::OK);
  EXPECT_EQ(call(check, "no.such.Service"), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(call("/scanner.Probe/Random123", ""), grpc::StatusCode::UNIMPLEMENTED);
  server->Shutdown();
  server->Wait();

  EXPECT_EQ(Sample(started) - started_before, 2);
  EXPECT_EQ(Sample(ok) - ok_before, 1);
  EXPECT_EQ(Sample(not_found) - not_found_before, 1);
  EXPECT_EQ(Sample(timed) - timed_before, 2);
  EXPECT_EQ(Sample(received) - received_before, 2);
  EXPECT_GE(Sample("grpc_server_msg_sent_total{" + labels + "}"), 1);
  // A path the server does not implement is counted, under "unknown".
  EXPECT_EQ(Sample(unknown) - unknown_before, 1);
  EXPECT_THAT(RenderMetricsText(), Not(HasSubstr("Random123")));
}

}  // namespace
}  // namespace bonsai::observability
