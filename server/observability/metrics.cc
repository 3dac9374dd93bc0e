#include "server/observability/metrics.h"

#include <atomic>

#include <array>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/text_serializer.h"
#include "server/observability/admitted_jobs_collector.h"
#include "server/observability/job_log.h"
#include "server/observability/process_collector.h"
#include "server/observability/registry.h"

namespace bonsai::observability {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// The method label's values: set at start from the method registry (the
// server's one list of methods) plus "recipe" and "inspect"; anything else
// is "other", so a client cannot grow the label's cardinality.
absl::Mutex method_labels_mu;
std::vector<std::string>* method_labels ABSL_GUARDED_BY(method_labels_mu) = nullptr;

std::string MethodLabel(std::string_view method) {
  absl::MutexLock lock(&method_labels_mu);
  if (method_labels != nullptr) {
    for (const std::string& known : *method_labels) {
      if (method == known) return known;
    }
  }
  return "other";
}
constexpr std::array<std::string_view, 2> kFormats = {"onnx", "safetensors"};
constexpr std::array<std::string_view, 5> kReasons = {"queue_full", "peer_limit", "too_large",
                                                      "shutting_down", "spool_full"};
constexpr std::array<std::string_view, 5> kOutcomes = {"ok", "invalid", "rejected",
                                                       "cancelled", "failed"};
constexpr std::array<std::string_view, 6> kStages = {"queue_wait", "receive",   "parse",
                                                     "compress",   "serialize", "send"};

template <size_t N>
std::string Bounded(std::string_view value, const std::array<std::string_view, N>& known,
                    std::string_view fallback) {
  for (std::string_view k : known) {
    if (value == k) return std::string(k);
  }
  return std::string(fallback);
}

Histogram::BucketBoundaries ModelByteBuckets() {
  Histogram::BucketBoundaries b;
  for (double v = 1024; v <= 16.0 * 1024 * 1024 * 1024; v *= 4) b.push_back(v);  // 1 KiB..16 GiB
  return b;
}

// Every family, built once in the shared registry.
struct Metrics {
  explicit Metrics(prometheus::Registry& r)
      : jobs(BuildCounter()
                 .Name("bonsai_jobs_total")
                 .Help("Compression and inspection jobs by method, format and outcome.")
                 .Register(r)),
        stage_seconds(BuildHistogram()
                          .Name("bonsai_job_stage_seconds")
                          .Help("Time a job spent in each stage.")
                          .Register(r)),
        running(BuildGauge()
                    .Name("bonsai_jobs_running")
                    .Help("Jobs computing on a core (bonsai_jobs_admitted{stage=\"running\"} "
                          "counts the same jobs; this one is unlabelled for the HPA).")
                    .Register(r)
                    .Add({})),
        queued(BuildGauge()
                   .Name("bonsai_jobs_queued")
                   .Help("Jobs holding a job slot but not a core: receiving or queued "
                         "(unlabelled, for the HPA).")
                   .Register(r)
                   .Add({})),
        workers(BuildGauge()
                    .Name("bonsai_workers")
                    .Help("Size of the worker pool.")
                    .Register(r)
                    .Add({})),
        job_slots(BuildGauge()
                      .Name("bonsai_job_slots")
                      .Help("Jobs the server admits at once (workers + max_queued_jobs); "
                            "past it, RESOURCE_EXHAUSTED.")
                      .Register(r)
                      .Add({})),
        received_bytes(BuildCounter()
                           .Name("bonsai_received_bytes_total")
                           .Help("Model and calibration bytes received from clients.")
                           .Register(r)
                           .Add({})),
        sent_bytes(BuildCounter()
                       .Name("bonsai_sent_bytes_total")
                       .Help("Compressed model bytes sent to clients.")
                       .Register(r)
                       .Add({})),
        model_bytes(BuildHistogram()
                        .Name("bonsai_model_bytes")
                        .Help("Size of uploaded models in bytes.")
                        .Register(r)
                        .Add({}, ModelByteBuckets())),
        compression_ratio(
            BuildHistogram()
                .Name("bonsai_compression_ratio")
                .Help("Input model bytes over zstd-compressed output bytes, per job.")
                .Register(r)
                .Add({}, Histogram::BucketBoundaries{1, 1.1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8,
                                                     10, 12, 16, 24, 32})),
        rejected(BuildCounter()
                     .Name("bonsai_rejected_total")
                     .Help("Jobs refused before they ran, by reason.")
                     .Register(r)) {
    BuildGauge()
        .Name("bonsai_build_info")
        .Help("Always 1; the labels tell which build is running.")
        .Register(r)
        .Add({{"version", BuildVersion()}, {"revision", BuildRevision()}})
        .Set(1);
    // Known series exist at zero from the start, so rate() and ratios over
    // them return a value before the first event rather than nothing.
    for (size_t i = 0; i < kStages.size(); ++i) {
      stages[i] = &stage_seconds.Add(
          {{"stage", std::string(kStages[i])}},
          Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                      5, 10, 30, 60, 120, 300, 600});
    }
    for (std::string_view reason : kReasons) rejected.Add({{"reason", std::string(reason)}});
  }

  prometheus::Family<prometheus::Counter>& jobs;
  prometheus::Family<Histogram>& stage_seconds;
  std::array<Histogram*, kStages.size()> stages{};
  prometheus::Gauge& running;
  prometheus::Gauge& queued;
  prometheus::Gauge& workers;
  prometheus::Gauge& job_slots;
  prometheus::Counter& received_bytes;
  prometheus::Counter& sent_bytes;
  Histogram& model_bytes;
  Histogram& compression_ratio;
  prometheus::Family<prometheus::Counter>& rejected;
};

Metrics& Get() {
  static Metrics* metrics = new Metrics(*MetricsRegistry());
  return *metrics;
}

std::string_view OutcomeName(JobOutcome outcome) {
  return kOutcomes[static_cast<size_t>(outcome)];
}

}  // namespace

const std::shared_ptr<prometheus::Registry>& MetricsRegistry() {
  static const auto* registry = new std::shared_ptr<prometheus::Registry>(
      std::make_shared<prometheus::Registry>());
  return *registry;
}

namespace {
std::atomic<int> bound_metrics_port{0};
}  // namespace

int BoundMetricsPort() { return bound_metrics_port.load(); }

absl::Status StartMetricsEndpoint(const std::string& listen, int workers) {
  Get().workers.Set(workers);
  if (listen.empty()) return absl::OkStatus();
  // Lives as long as the process: scrapes may come until the very end.
  static std::unique_ptr<prometheus::Exposer> exposer;
  static std::shared_ptr<ProcessCollector> process = std::make_shared<ProcessCollector>();
  static std::shared_ptr<AdmittedJobsCollector> admitted =
      std::make_shared<AdmittedJobsCollector>();
  if (exposer != nullptr) return absl::FailedPreconditionError("metrics endpoint already started");
  try {
    exposer = std::make_unique<prometheus::Exposer>(listen, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  exposer->RegisterCollectable(MetricsRegistry());
  exposer->RegisterCollectable(process);
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (!ports.empty()) bound_metrics_port.store(ports.front());
  exposer->RegisterCollectable(admitted);
  return absl::OkStatus();
}

void SetMethodLabels(std::vector<std::string> methods) {
  methods.push_back("recipe");
  methods.push_back("inspect");
  absl::MutexLock lock(&method_labels_mu);
  delete method_labels;
  method_labels = new std::vector<std::string>(std::move(methods));
}

void RecordJob(std::string_view method, std::string_view format, JobOutcome outcome) {
  Get()
      .jobs
      .Add({{"method", MethodLabel(method)},
            {"format", Bounded(format, kFormats, "unknown")},
            {"outcome", std::string(OutcomeName(outcome))}})
      .Increment();
}

void RecordStageSeconds(JobStage stage, double seconds) {
  Get().stages[static_cast<size_t>(stage)]->Observe(seconds);
}

void RecordRejected(std::string_view reason) {
  Get().rejected.Add({{"reason", Bounded(reason, kReasons, "other")}}).Increment();
}

void RecordReceivedBytes(uint64_t bytes) {
  Get().received_bytes.Increment(static_cast<double>(bytes));
}

void RecordSentBytes(uint64_t bytes) { Get().sent_bytes.Increment(static_cast<double>(bytes)); }

void RecordModelBytes(uint64_t bytes) { Get().model_bytes.Observe(static_cast<double>(bytes)); }

void RecordCompressionRatio(double input_over_zstd_output) {
  Get().compression_ratio.Observe(input_over_zstd_output);
}

void SetJobsRunning(int64_t running) { Get().running.Set(static_cast<double>(running)); }

void SetJobsQueued(int64_t queued) { Get().queued.Set(static_cast<double>(queued)); }

void SetJobSlots(int64_t slots) { Get().job_slots.Set(static_cast<double>(slots)); }

std::string RenderMetricsText() {
  Get();  // the families exist even before the first event
  auto families = MetricsRegistry()->Collect();
  for (auto& f : ProcessCollector().Collect()) families.push_back(std::move(f));
  for (auto& f : AdmittedJobsCollector().Collect()) families.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace bonsai::observability
