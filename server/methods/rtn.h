// Round-to-nearest weight quantization: every group of `group_size` weights
// along a row's reduction axis (input channels; in * kh * kw in PyTorch's
// unfold order for a Conv weight, as GPTQ and onnxruntime group them) gets
// its own grid, and each weight is rounded to the nearest point of it
// (quant_grid.h). Output is dense: the dequantized float weights.
//
// Calibration is optional; when the layer's inputs are sent, the report
// carries the reconstruction error on them, as for the other methods.
#ifndef BONSAI_SERVER_METHODS_RTN_H_
#define BONSAI_SERVER_METHODS_RTN_H_

#include "server/methods/method.h"
#include "server/methods/quant_grid.h"

namespace bonsai::methods {

class RtnMethod : public Method {
 public:
  explicit RtnMethod(const MethodConfig& config);
  absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                      const ProgressTick& tick) override;

 private:
  QuantSpec spec_;
};

// The grid options of a config, defaults filled in (rtn, gptq, sparsegpt).
QuantSpec QuantSpecOf(const MethodConfig& config);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_RTN_H_
