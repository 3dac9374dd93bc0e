// The checks every calibration-based method makes before touching a weight,
// with errors that tell the user what to send.
#ifndef BONSAI_SERVER_METHODS_CALIBRATION_CHECK_H_
#define BONSAI_SERVER_METHODS_CALIBRATION_CHECK_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "server/methods/method.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

// InvalidArgument when the weight has no calibration statistics, or when
// their dimension is not the weight's reduction length.
absl::Status CheckCalibration(absl::string_view method, const WeightTensor& weight,
                              const MatrixGeometry& geometry);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_CALIBRATION_CHECK_H_
