// Global magnitude pruning of a safetensors model, timed three ways and
// printed as one JSON object for bench/run_all.py:
//   method  the real method (CreateMethod, its three observation passes, then
//           Apply) over the tensors already decoded in memory: the figure
//           compared with torch.nn.utils.prune.global_unstructured;
//   loop    the same, reading every tensor from the model for every pass and
//           writing it back, as RunObservationPasses / ApplyMethods do;
//   job     the whole RunCompressionJob (parse, passes, apply with its
//           report, serialize, SHA-256 and zstd digest), with its own stage
//           timings, so end-to-end figures can be taken apart.
// Each is the best of --repeats runs on fresh copies of the weights, and
// each checks that exactly round(sparsity * n) weights ended up zero.
//
//   global_magnitude_bench --model model.safetensors [--sparsity 0.5] [--repeats 3]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "bonsai/v1/compressor.pb.h"
#include "server/engine/core_lending.h"
#include "server/engine/compression_job.h"
#include "server/engine/job_plan.h"
#include "server/formats/in_memory.h"
#include "server/formats/model.h"
#include "server/methods/method.h"
#include "server/tensor/float_tensor.h"
#include "server/tensor/magnitude_select.h"

namespace {

using bonsai::formats::Model;
using bonsai::tensor::FloatTensor;
namespace methods = bonsai::methods;
namespace engine = bonsai::engine;
using Clock = std::chrono::steady_clock;
using bonsai::bench::CpuSeconds;
using bonsai::bench::Fail;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

template <typename T>
T Check(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) Fail(absl::StrFormat("%s: %s", what, value.status().ToString()));
  return *std::move(value);
}

void Check(const absl::Status& status, const char* what) {
  if (!status.ok()) Fail(absl::StrFormat("%s: %s", what, status.ToString()));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) Fail("cannot open " + path);
  std::string bytes(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return bytes;
}

uint64_t CountZeros(absl::Span<const float> values) {
  uint64_t zeros = 0;
  for (float v : values) zeros += v == 0.0f;
  return zeros;
}

// The tensors global magnitude prunes by default in safetensors: every
// selected-by-default one (rank >= 2, not an embedding).
std::vector<size_t> PrunedTensors(const Model& model) {
  std::vector<size_t> indices;
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    if (model.tensors()[i].selected_by_default) indices.push_back(i);
  }
  return indices;
}

struct Run {
  double seconds = 0;
  double cpu_seconds = 0;
  uint64_t zeros = 0;
};

// Observation passes and Apply on decoded tensors.
Run RunMethod(const std::vector<bonsai::formats::TensorInfo>& infos,
              std::vector<FloatTensor> weights, double sparsity) {
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  auto method = Check(methods::CreateMethod({"magnitude", sparsity, methods::Scope::kGlobal}),
                      "CreateMethod");
  auto weight_of = [&](size_t i) {
    return methods::WeightTensor{&infos[i], &weights[i], sparsity, nullptr};
  };
  for (int pass = 0; pass < method->observation_passes(); ++pass) {
    if (!method->NeedsPass(pass)) break;
    for (size_t i = 0; i < weights.size(); ++i) method->Observe(pass, weight_of(i));
    method->EndPass(pass);
  }
  for (size_t i = 0; i < weights.size(); ++i) {
    Check(method->Apply(weight_of(i), [](double) { return true; }), "Apply");
  }
  Run run;
  run.seconds = SecondsSince(start);
  run.cpu_seconds = CpuSeconds() - cpu_start;
  for (const FloatTensor& w : weights) run.zeros += CountZeros(w.span());
  return run;
}

// The engine's loop: a Read of each tensor (into one reused buffer) for
// every pass, and for Apply a Read, Apply, the comparison for the report and
// Write.
Run RunEngineLoop(std::string bytes, double sparsity) {
  auto model = Check(bonsai::formats::ParseModel(std::move(bytes)), "ParseModel");
  const std::vector<size_t> indices = PrunedTensors(*model);
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  auto method = Check(methods::CreateMethod({"magnitude", sparsity, methods::Scope::kGlobal}),
                      "CreateMethod");
  const auto& infos = model->tensors();
  FloatTensor values;  // reused, as the engine does
  for (int pass = 0; pass < method->observation_passes(); ++pass) {
    if (!method->NeedsPass(pass)) break;
    for (size_t index : indices) {
      Check(model->ReadInto(index, values), "Read");
      method->Observe(pass, {&infos[index], &values, sparsity, nullptr});
    }
    method->EndPass(pass);
  }
  for (size_t index : indices) {
    Check(model->ReadInto(index, values), "Read");
    auto outcome = Check(method->Apply({&infos[index], &values, sparsity, nullptr},
                                       [](double) { return true; }),
                         "Apply");
    Check(model->CompareWithStored(index, values.span()), "CompareWithStored");
    Check(model->Write(index, values, outcome.packing), "Write");
  }
  Run run;
  run.seconds = SecondsSince(start);
  run.cpu_seconds = CpuSeconds() - cpu_start;
  for (size_t index : indices) run.zeros += CountZeros(Check(model->Read(index), "Read").span());
  return run;
}

struct JobRun {
  double seconds = 0;
  double cpu_seconds = 0;
  double parse = 0, compress = 0, serialize = 0;
  uint64_t zeros = 0;
};

JobRun RunJob(std::string bytes, double sparsity) {
  bonsai::v1::CompressionSpec proto;
  proto.set_method("magnitude");
  proto.set_sparsity(sparsity);
  proto.set_scope(bonsai::v1::SCOPE_GLOBAL);
  const engine::ValidatedSpec spec = Check(engine::ValidateSpec(proto), "ValidateSpec");
  // The job reads the model from a complete spool file and writes its output
  // to the spool, as in the server (less the upload and the send).
  auto file = bonsai::storage::SpoolFile::Create("/tmp", "model.safetensors");
  if (!file.ok() || !(*file)->Append(bytes).ok()) Fail("cannot spool the model in /tmp");
  (*file)->Complete();
  const uint64_t size = bytes.size();
  std::string().swap(bytes);
  engine::JobOutput sink(bonsai::storage::SpoolPlace{.dir = "/tmp"}, {"model.safetensors"}, {size}, nullptr);
  engine::CompressionInput input;
  input.spec = &spec;
  input.files.emplace_back(0, "model.safetensors", size, *file, bonsai::formats::WaitPolicy{});
  input.output = &sink;
  engine::CancellationToken cancel;
  const auto start = Clock::now();
  const double cpu_start = CpuSeconds();
  auto output = Check(engine::RunCompressionJob(
                          std::move(input), [](bonsai::v1::Stage, double, std::string_view) {},
                          cancel),
                      "RunCompressionJob");
  JobRun run;
  run.seconds = SecondsSince(start);
  run.cpu_seconds = CpuSeconds() - cpu_start;
  const auto& timings = output.timings();
  run.parse = timings.parse_seconds();
  run.compress = timings.compress_seconds();
  run.serialize = timings.serialize_seconds();
  run.zeros = output.totals().prunable_params() - output.totals().nonzero_after();
  return run;
}

struct Options {
  std::string model;
  double sparsity = 0.5;
  int repeats = 3;
  bool job = true;
};

Options ParseOptions(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Fail("missing value after " + arg);
      return argv[++i];
    };
    if (arg == "--model") options.model = next();
    else if (arg == "--sparsity") options.sparsity = std::stod(next());
    else if (arg == "--repeats") options.repeats = std::stoi(next());
    else if (arg == "--no-job") options.job = false;
    else Fail("unknown argument " + arg);
  }
  if (options.model.empty()) Fail("--model PATH is required");
  if (options.repeats < 1) Fail("--repeats must be >= 1");
  return options;
}

// Best (smallest) wall and CPU times of a series of runs, and every wall time.
struct Series {
  std::vector<double> wall, cpu;
  void Add(double w, double c) { wall.push_back(w); cpu.push_back(c); }
  std::string Json(const std::string& prefix) const {
    std::string runs;
    for (size_t i = 0; i < wall.size(); ++i) runs += absl::StrFormat("%s%.6f", i ? ", " : "", wall[i]);
    return absl::StrFormat("\"%s_seconds\": %.6f, \"%s_cpu_seconds\": %.6f, \"%s_runs\": [%s]",
                           prefix, *std::min_element(wall.begin(), wall.end()), prefix,
                           *std::min_element(cpu.begin(), cpu.end()), prefix, runs);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const Options options = ParseOptions(argc, argv);
  // As on an idle server: one job, the machine's cores to lend its loops.
  bonsai::engine::CoreLending lending(static_cast<int>(std::thread::hardware_concurrency()));
  const std::string bytes = ReadFile(options.model);

  auto model = Check(bonsai::formats::ParseModel(std::string(bytes)), "ParseModel");
  const std::vector<size_t> indices = PrunedTensors(*model);
  std::vector<FloatTensor> originals;
  std::vector<bonsai::formats::TensorInfo> infos;
  uint64_t params = 0;
  for (size_t index : indices) {
    infos.push_back(model->tensors()[index]);
    originals.push_back(Check(model->Read(index), "Read"));
    params += originals.back().size();
  }
  model.reset();
  const uint64_t expected = bonsai::tensor::PruneCount(options.sparsity, params);

  bool zeros_ok = true;
  Series method, loop, job;
  for (int r = 0; r < options.repeats; ++r) {
    const Run run = RunMethod(infos, originals, options.sparsity);
    zeros_ok &= run.zeros == expected;
    method.Add(run.seconds, run.cpu_seconds);
  }
  originals.clear();
  originals.shrink_to_fit();
  for (int r = 0; r < options.repeats; ++r) {
    const Run run = RunEngineLoop(bytes, options.sparsity);
    zeros_ok &= run.zeros == expected;
    loop.Add(run.seconds, run.cpu_seconds);
  }
  JobRun job_best;
  for (int r = 0; options.job && r < options.repeats; ++r) {
    const JobRun run = RunJob(bytes, options.sparsity);
    zeros_ok &= run.zeros == expected;
    job.Add(run.seconds, run.cpu_seconds);
    if (r == 0 || run.seconds < job_best.seconds) job_best = run;
  }

  std::string out = absl::StrFormat(
      "{\"tensors\": %d, \"params\": %d, \"sparsity\": %.6f, \"expected_zeros\": %d, "
      "\"zeros_ok\": %s, %s, %s",
      indices.size(), params, options.sparsity, expected, zeros_ok ? "true" : "false",
      method.Json("method"), loop.Json("loop"));
  if (options.job) {
    // Stage timings of the fastest job, from its own report.
    absl::StrAppendFormat(&out,
                          ", %s, \"job_parse_seconds\": %.6f, \"job_compress_seconds\": %.6f, "
                          "\"job_serialize_seconds\": %.6f",
                          job.Json("job"), job_best.parse, job_best.compress, job_best.serialize);
  }
  std::printf("%s}\n", out.c_str());
  return zeros_ok ? 0 : 2;
}
