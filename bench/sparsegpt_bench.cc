// SparseGPT (or, with --method gptq, GPTQ) on one layer through
// CreateMethod + Apply, as the engine calls it, timed and with its peak
// memory; printed as one JSON object for bench/run_all.py. The layer and its
// calibration Gram matrix come from a safetensors file written by
// bench/torch_sparsegpt.py (tensors "weight" [rows, cols] and "gram" [cols,
// cols] = X^T X over --samples rows), so the torch references work on
// exactly the same problem.
//
//   sparsegpt_bench --data FILE --samples N [--method sparsegpt|gptq] [--sparsity 0.5]
//                   [--bits B] [--group_size G] [--act_order 0|1] [--repeats 1] [--save OUT]
//
// --bits with sparsegpt is its joint pruning and quantization.
//
// --save writes the pruned weight as raw float32, to compare the output of
// two builds bit for bit.
//
// BLAS runs on one thread, as in the server's workers (job_scheduler.cc),
// and as the torch baseline does here.
//
// Peak memory is VmHWM of this process during Apply alone: the high-water
// mark is reset (/proc/self/clear_refs) just before, when the process holds
// the inputs and a fresh copy of the weight; "rss_before" is that level.
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "server/formats/in_memory.h"
#include "server/formats/model.h"
#include "server/methods/method.h"
#include "server/tensor/float_tensor.h"

namespace {

namespace methods = bonsai::methods;
using bonsai::tensor::FloatTensor;
using Clock = std::chrono::steady_clock;
using bonsai::bench::CpuSeconds;
using bonsai::bench::Fail;

// A field of /proc/self/status in bytes (VmRSS, VmHWM).
uint64_t StatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  }
  Fail("no " + field + " in /proc/self/status");
}

void ResetPeakRss() {
  std::ofstream("/proc/self/clear_refs") << "5";
}

size_t IndexOf(const bonsai::formats::Model& model, const std::string& name) {
  for (size_t i = 0; i < model.tensors().size(); ++i) {
    if (model.tensors()[i].name == name) return i;
  }
  Fail("no tensor \"" + name + "\" in the data file");
}

}  // namespace

int main(int argc, char** argv) {
  std::string data;
  uint64_t samples = 0;
  double sparsity = 0.5;
  int repeats = 1;
  std::string save, method_name = "sparsegpt";
  int bits = 0;
  bool act_order = false;
  int64_t group_size = 128;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Fail("missing value after " + arg);
    const std::string value = argv[++i];
    if (arg == "--data") data = value;
    else if (arg == "--samples") samples = std::stoull(value);
    else if (arg == "--sparsity") sparsity = std::stod(value);
    else if (arg == "--repeats") repeats = std::stoi(value);
    else if (arg == "--save") save = value;
    else if (arg == "--method") method_name = value;
    else if (arg == "--bits") bits = std::stoi(value);
    else if (arg == "--group_size") group_size = std::stoll(value);
    else if (arg == "--act_order") act_order = value == "1";
    else Fail("unknown argument " + arg);
  }
  if (data.empty() || samples == 0) Fail("--data FILE and --samples N are required");

  openblas_set_num_threads(1);
  std::ifstream in(data, std::ios::binary | std::ios::ate);
  if (!in) Fail("cannot open " + data);
  std::string bytes(static_cast<size_t>(in.tellg()), '\0');
  in.seekg(0).read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto model = bonsai::formats::ParseModel(std::move(bytes));
  if (!model.ok()) Fail(model.status().ToString());
  const size_t weight_index = IndexOf(**model, "weight");
  const bonsai::formats::TensorInfo info = (*model)->tensors()[weight_index];
  auto original = (*model)->Read(weight_index);
  auto gram = (*model)->Read(IndexOf(**model, "gram"));
  if (!original.ok() || !gram.ok()) Fail("cannot read the data file's tensors");
  model->reset();
  methods::CalibrationStats calibration{std::move(gram->values), gram->shape[0], samples};
  const double target = method_name == "gptq" ? 0.0 : sparsity;  // gptq prunes nothing

  double best = 1e300, best_cpu = 1e300, error = -1;
  uint64_t peak = 0, rss_before = 0, zeros = 0;
  for (int r = 0; r < repeats; ++r) {
    FloatTensor weight = *original;
    methods::CalibrationStats fresh = calibration;  // Apply consumes its statistics
    auto method = methods::CreateMethod({.method = method_name,
                                         .sparsity = target,
                                         .block_size = 128,
                                         .dampening = 0.01,
                                         .bits = bits,
                                         .group_size = group_size,
                                         .act_order = act_order});
    if (!method.ok()) Fail(method.status().ToString());
    ResetPeakRss();
    rss_before = StatusBytes("VmRSS");
    const auto start = Clock::now();
    const double cpu_start = CpuSeconds();
    auto outcome = (*method)->Apply({&info, &weight, target, &fresh},
                                    [](double) { return true; });
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const double cpu = CpuSeconds() - cpu_start;
    peak = std::max(peak, StatusBytes("VmHWM"));
    if (!outcome.ok()) Fail(outcome.status().ToString());
    best = std::min(best, seconds);
    best_cpu = std::min(best_cpu, cpu);
    error = outcome->reconstruction_error;
    zeros = 0;
    for (float v : weight.values) zeros += v == 0.0f;
    if (!save.empty() && r == 0) {
      std::ofstream out(save, std::ios::binary);
      out.write(reinterpret_cast<const char*>(weight.values.data()),
                static_cast<std::streamsize>(weight.values.size() * sizeof(float)));
      if (!out) Fail("cannot write " + save);
    }
  }
  absl::PrintF(
      "{\"rows\": %d, \"cols\": %d, \"samples\": %d, \"seconds\": %.6f, \"cpu_seconds\": %.6f, "
      "\"vm_hwm_bytes\": %d, \"rss_before_bytes\": %d, \"zeros\": %d, \"params\": %d, "
      "\"reconstruction_error\": %.8f}\n",
      info.shape[0], info.shape[1], samples, best, best_cpu, peak, rss_before, zeros,
      original->size(), error);
  return 0;
}
