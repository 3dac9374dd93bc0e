// Hostile calibration files (safetensors of activations or Gram matrices).
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/engine/calibration.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto set = bonsai::engine::ParseCalibration(std::string(reinterpret_cast<const char*>(data), size));
  if (!set.ok()) return 0;
  for (const std::string& name : set->WeightNames()) {
    // A parsed set is what the methods trust: one dim x dim matrix per weight.
    const bonsai::methods::CalibrationStats* stats = set->Find(name);
    if (stats == nullptr || stats->dim < 0) __builtin_trap();
    const size_t dim = static_cast<size_t>(stats->dim), cells = stats->gram.size();
    if (dim == 0 ? cells != 0 : cells % dim != 0 || cells / dim != dim) __builtin_trap();
  }
  return 0;
}
