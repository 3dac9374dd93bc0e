// Calibration data: the statistics of each layer's inputs that Wanda and
// SparseGPT need, parsed from the safetensors file a client sends beside the
// model. For a weight named W the file holds either
//   W          its layer's input activations, F32/F16/BF16/F64 [n, d_in],
//              turned into the Gram matrix X^T X here; or
//   W.gram     the accumulated Gram matrix X^T X, [d_in, d_in], with
//   W.samples  the number of input rows n behind it: a one-element I64, F64
//              or F32 tensor, or the decimal string under "W.samples" in
//              __metadata__ (the tensor wins when both are present).
// and, for weights that read the same input as another (q/k/v, gate/up),
//   "W.gram_of" in __metadata__: the name of the weight whose statistics W
//              shares, so the file holds one Gram matrix for them all.
// Activations and a Gram matrix for the same weight are summed (both are
// sums over input rows). A Gram matrix without a sample count is accepted
// with samples = 0: the methods only use n to scale H, which changes none of
// their decisions. d_in is the weight's reduction length, in PyTorch unfold
// order for Conv weights (in * kh * kw).
#ifndef BONSAI_SERVER_ENGINE_CALIBRATION_H_
#define BONSAI_SERVER_ENGINE_CALIBRATION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "server/methods/method.h"

namespace bonsai::engine {

// The float32 Gram matrices of one calibration file may take at most twice
// the file's size, or this much when that is less. Gram matrices sent as
// such always fit (their F16/BF16 bytes are half their float32 size); what
// it refuses are activations much wider than they are tall, whose d x d
// would otherwise be allocated from a few bytes of header (and whose Gram
// has rank below d / 2 anyway).
inline constexpr uint64_t kMinCalibrationGramBudgetBytes = 64ull << 20;

class CalibrationSet {
 public:
  // The statistics for a weight (through its alias, if any), or null when
  // the file had none for it. Not to be changed: others may share them.
  const methods::CalibrationStats* Find(std::string_view weight_name) const;
  // The statistics for the one Apply that may consume them: the stored ones
  // themselves for their last user, a copy for the others (weights sharing
  // one Gram matrix), so at most one copy exists at a time. Null when none.
  std::unique_ptr<methods::CalibrationStats> TakeForApply(std::string_view weight_name);

  size_t size() const { return stats_.size() + alias_of_.size(); }
  // Memory the statistics hold, with room for one working copy of the
  // largest shared matrix.
  uint64_t bytes() const;
  // Weight names with statistics (aliases included), sorted (for reports of
  // unused entries).
  std::vector<std::string> WeightNames() const;

 private:
  friend absl::StatusOr<CalibrationSet> ParseCalibration(std::string bytes);
  const std::string& Resolve(std::string_view weight_name) const;

  absl::flat_hash_map<std::string, methods::CalibrationStats> stats_;
  absl::flat_hash_map<std::string, std::string> alias_of_;  // weight -> weight with stats
  absl::flat_hash_map<std::string, int> users_;             // weight with stats -> uses left
};

// Parses a calibration file; empty bytes give an empty set. InvalidArgument
// naming the tensor for anything malformed (not safetensors, a Gram matrix
// that is not square, activations that are not 2-D, a sample count without
// its Gram matrix, ...).
absl::StatusOr<CalibrationSet> ParseCalibration(std::string bytes);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_CALIBRATION_H_
