// The one small interface every compression method implements. A method
// knows tensors, never gRPC or file formats: it sees one weight at a time
// (with its layout and, when the method needs it, its calibration
// statistics), changes the values in place, and says how they can be packed.
//
// Methods whose decision spans several tensors (global magnitude pruning)
// look at every tensor of their group in one or more observation passes
// before the first Apply, so the tensors never need to be in memory together.
#ifndef BONSAI_SERVER_METHODS_METHOD_H_
#define BONSAI_SERVER_METHODS_METHOD_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/formats/model.h"
#include "server/methods/method_config.h"
#include "server/tensor/float_tensor.h"

namespace bonsai::tensor {
struct MagnitudeCut;  // tensor/magnitude_cut.h
}  // namespace bonsai::tensor

namespace bonsai::methods {

// Input statistics of the layer that consumes a weight, from calibration
// data: the Gram matrix H = X^T X (d_in x d_in, row-major) over `samples`
// input rows, where d_in is the weight's reduction length.
struct CalibrationStats {
  std::vector<float> gram;
  int64_t dim = 0;
  uint64_t samples = 0;
};

struct WeightTensor {
  const formats::TensorInfo* info = nullptr;
  tensor::FloatTensor* values = nullptr;  // changed in place by Apply
  double sparsity = 0.0;                  // this tensor's target
  // Null when none was sent. A weight's statistics serve its own Apply and
  // nothing after it, so the method may use their storage as scratch: a
  // d x d Hessian need not be copied (484 MiB for an 11008-wide layer).
  CalibrationStats* calibration = nullptr;
};

struct MethodOutcome {
  std::string note;                    // shown in the report, e.g. a dense tail
  double reconstruction_error = -1.0;  // < 0 when not computed
  formats::PackingHint packing;
};

// Called by long methods so the job can report progress and notice
// cancellation: returns false when the job should stop.
using ProgressTick = std::function<bool(double fraction_of_tensor)>;

// A method whose global cut may be settled outside its own job, over every
// job of a model spread across replicas (engine/global_exchange.h): the
// engine feeds it the agreed cut instead of running the observation passes.
class SettleableGlobalCut {
 public:
  virtual ~SettleableGlobalCut() = default;
  virtual void SettleCut(const tensor::MagnitudeCut& cut) = 0;
};

class Method {
 public:
  virtual ~Method() = default;

  // Capabilities the engine asks for instead of knowing method types.
  // Global magnitude pruning: null for every other method and scope.
  virtual SettleableGlobalCut* settleable_global_cut() { return nullptr; }
  // Removes channels from the model's graph (structured pruning in physical
  // mode), which the engine does as graph surgery before any Apply; such a
  // method's Apply is never called.
  virtual bool removes_channels_from_graph() const { return false; }

  // At most this many passes; a method may find after one pass that it
  // needs no more (NeedsPass is asked before each), so a pass costs only
  // when the data calls for it.
  virtual int observation_passes() const { return 0; }
  virtual bool NeedsPass(int pass) const { return true; }
  virtual void Observe(int pass, const WeightTensor& weight) {}
  virtual void EndPass(int pass) {}

  virtual absl::StatusOr<MethodOutcome> Apply(const WeightTensor& weight,
                                              const ProgressTick& tick) = 0;
};

// Validates the config (parameters in range, calibration present when the
// method needs it is checked per tensor at Apply) and builds the method.
absl::StatusOr<std::unique_ptr<Method>> CreateMethod(const MethodConfig& config);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_METHOD_H_
