// Throughput of the one-pass methods (N:M, binarize, ternarize, and 4-bit
// round-to-nearest in groups of 128) through CreateMethod + Apply, as the
// engine calls them, on float32 weights of PyTorch layout [out, in] (or
// ONNX MatMul's [in, out] with
// --layout matmul, whose rows are not contiguous); printed as one JSON
// object for bench/run_all.py, in GB/s of float32 weights (best of
// --repeats, each on a fresh copy of the weights).
//
//   elementwise_methods_bench [--tensors 4] [--rows 4096] [--cols 4096] [--repeats 3]
//                             [--layout torch|matmul]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "server/engine/core_lending.h"
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

struct Case {
  std::string name;
  methods::MethodConfig config;
};

struct Timing {
  double seconds = 1e300, cpu_seconds = 1e300;
};

Timing Measure(const Case& c, const std::vector<bonsai::formats::TensorInfo>& infos,
               const std::vector<FloatTensor>& originals, int repeats) {
  Timing best;
  for (int r = 0; r < repeats; ++r) {
    std::vector<FloatTensor> weights = originals;
    const auto start = Clock::now();
    const double cpu_start = CpuSeconds();
    auto method = methods::CreateMethod(c.config);
    if (!method.ok()) Fail(method.status().ToString());
    for (size_t i = 0; i < weights.size(); ++i) {
      auto outcome = (*method)->Apply({&infos[i], &weights[i], c.config.sparsity, nullptr},
                                      [](double) { return true; });
      if (!outcome.ok()) Fail(c.name + ": " + outcome.status().ToString());
    }
    best.seconds = std::min(best.seconds,
                            std::chrono::duration<double>(Clock::now() - start).count());
    best.cpu_seconds = std::min(best.cpu_seconds, CpuSeconds() - cpu_start);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t tensors = 4, rows = 4096, cols = 4096;
  // As on an idle server: one job, the machine's cores to lend its loops.
  bonsai::engine::CoreLending lending(static_cast<int>(std::thread::hardware_concurrency()));
  int repeats = 3;
  bool matmul = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 >= argc) Fail("missing value after " + arg);
    if (arg == "--layout") {
      matmul = std::string(argv[++i]) == "matmul";
      continue;
    }
    const long long value = std::stoll(argv[++i]);
    if (arg == "--tensors") tensors = value;
    else if (arg == "--rows") rows = value;
    else if (arg == "--cols") cols = value;
    else if (arg == "--repeats") repeats = static_cast<int>(value);
    else Fail("unknown argument " + arg);
  }

  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<bonsai::formats::TensorInfo> infos(tensors);
  std::vector<FloatTensor> originals(tensors);
  for (int64_t t = 0; t < tensors; ++t) {
    infos[t].name = absl::StrFormat("layers.%d.weight", t);
    // [in, out] holds the same matrix transposed: rows are output channels.
    const std::vector<int64_t> shape = matmul ? std::vector<int64_t>{cols, rows}
                                              : std::vector<int64_t>{rows, cols};
    infos[t].shape = shape;
    infos[t].dtype = bonsai::tensor::DType::kF32;
    infos[t].params = rows * cols;
    infos[t].layout = matmul ? bonsai::formats::WeightLayout{1, 0}
                             : bonsai::formats::WeightLayout{0, 1};
    originals[t].shape = shape;
    originals[t].values.resize(rows * cols);
    for (float& v : originals[t].values) v = normal(rng);
  }
  const double bytes = 4.0 * tensors * rows * cols;

  const std::vector<Case> cases = {
      {"nm_2_4", {.method = "nm", .n = 2, .m = 4}},
      {"binarize", {.method = "binarize"}},
      {"ternarize", {.method = "ternarize"}},
      {"nm_4_8", {.method = "nm", .n = 4, .m = 8}},
      {"ternarize_per_channel", {.method = "ternarize", .per_channel = true}},
      {"rtn_4_g128", {.method = "rtn", .bits = 4, .group_size = 128}}};
  std::string out = absl::StrFormat(
      "{\"bytes\": %.0f, \"tensors\": %d, \"rows\": %d, \"cols\": %d, \"layout\": \"%s\"", bytes,
      tensors, rows, cols, matmul ? "matmul" : "torch");
  for (const Case& c : cases) {
    const Timing t = Measure(c, infos, originals, repeats);
    absl::StrAppendFormat(&out,
                          ", \"%s\": {\"seconds\": %.6f, \"cpu_seconds\": %.6f, \"gb_s\": %.4f, "
                          "\"cpu_gb_s\": %.4f}",
                          c.name, t.seconds, t.cpu_seconds, bytes / 1e9 / t.seconds,
                          bytes / 1e9 / t.cpu_seconds);
  }
  std::printf("%s}\n", out.c_str());
  return 0;
}
