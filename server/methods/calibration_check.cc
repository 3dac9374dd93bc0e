#include "server/methods/calibration_check.h"

#include "absl/strings/str_cat.h"

namespace bonsai::methods {

absl::Status CheckCalibration(absl::string_view method, const WeightTensor& weight,
                              const MatrixGeometry& geometry) {
  const std::string& name = weight.info->name;
  const CalibrationStats* stats = weight.calibration;
  if (stats == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        method, " needs calibration data for tensor '", name,
        "': send a calibration safetensors file with the layer's inputs under '", name,
        "' (n x ", geometry.cols(), ") or their Gram matrix under '", name, ".gram' (",
        geometry.cols(), " x ", geometry.cols(), ")"));
  }
  if (stats->dim != geometry.cols()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration for tensor '", name, "' has dimension ", stats->dim,
        " but the tensor's reduction length is ", geometry.cols(),
        geometry.kernel > 1 ? absl::StrCat(" (", geometry.channels, " input channels x ",
                                           geometry.kernel, " kernel positions)")
                            : std::string(),
        "; send inputs of the layer that uses this weight"));
  }
  if (stats->gram.size() != static_cast<size_t>(stats->dim) * stats->dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "calibration for tensor '", name, "' holds ", stats->gram.size(),
        " values for a ", stats->dim, " x ", stats->dim, " Gram matrix"));
  }
  return absl::OkStatus();
}

}  // namespace bonsai::methods
