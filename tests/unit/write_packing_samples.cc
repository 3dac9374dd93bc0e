// bonsai-packing-samples DIR: writes the sample models of packing_samples.h,
// each dense and packed, into DIR, for tests/e2e/test_packing_format.py,
// which unpacks them with the Python reader and compares them with numpy,
// onnx.checker and onnxruntime.
#include <cstdio>
#include <fstream>
#include <string>

#include "tests/unit/packing_samples.h"

namespace {

bool Write(const std::string& path, const absl::StatusOr<std::string>& bytes) {
  if (!bytes.ok()) {
    std::fprintf(stderr, "%s: %s\n", path.c_str(), std::string(bytes.status().message()).c_str());
    return false;
  }
  std::ofstream out(path, std::ios::binary);
  out << *bytes;
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  namespace util = bonsai::formats::test_util;
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  auto safetensors = util::CompressSafetensorsBothWays(util::SampleSafetensors());
  if (!safetensors.ok()) {
    std::fprintf(stderr, "safetensors sample: %s\n", std::string(safetensors.status().message()).c_str());
    return 1;
  }
  const bool ok = Write(dir + "/sample.dense.safetensors", safetensors->dense) &&
                  Write(dir + "/sample.packed.safetensors", safetensors->packed) &&
                  Write(dir + "/sample.dense.onnx", util::CompressOnnxSample(false)) &&
                  Write(dir + "/sample.packed.onnx", util::CompressOnnxSample(true));
  return ok ? 0 : 1;
}
