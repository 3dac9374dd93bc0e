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
#ifndef BONSAI_SERVER_FORMATS_CALIBRATION_FILE_H_
#define BONSAI_SERVER_FORMATS_CALIBRATION_FILE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace bonsai::formats {

// The float32 Gram matrices of one calibration file may take at most twice
// the file's size, or this much when that is less. Gram matrices sent as
// such always fit (their F16/BF16 bytes are half their float32 size); what
// it refuses are activations much wider than they are tall, whose d x d
// would otherwise be allocated from a few bytes of header (and whose Gram
// has rank below d / 2 anyway).
inline constexpr uint64_t kMinCalibrationGramBudgetBytes = 64ull << 20;

// One weight's statistics: X^T X over its layer's input rows.
struct CalibrationEntry {
  std::vector<float> gram;  // dim x dim, row-major
  int64_t dim = 0;
  uint64_t samples = 0;
};

struct CalibrationFile {
  absl::flat_hash_map<std::string, CalibrationEntry> weights;
  // Weights that share another's statistics ("W.gram_of"): weight -> the
  // weight in `weights` whose Gram matrix it reads.
  absl::flat_hash_map<std::string, std::string> aliases;
};

// Parses a calibration file; empty bytes give an empty file. InvalidArgument
// naming the tensor for anything malformed (not safetensors, a Gram matrix
// that is not square, activations that are not 2-D, a sample count without
// its Gram matrix, ...).
absl::StatusOr<CalibrationFile> ParseCalibrationFile(std::string_view bytes);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_CALIBRATION_FILE_H_
