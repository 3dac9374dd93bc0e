// The calibration statistics of one job, as the methods use them: looked up
// by weight name (through the file's aliases), and handed to the one Apply
// that may consume each. The file's format is in formats/calibration_file.h.
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
  friend absl::StatusOr<CalibrationSet> ParseCalibration(std::string_view bytes);
  const std::string& Resolve(std::string_view weight_name) const;

  absl::flat_hash_map<std::string, methods::CalibrationStats> stats_;
  absl::flat_hash_map<std::string, std::string> alias_of_;  // weight -> weight with stats
  absl::flat_hash_map<std::string, int> users_;             // weight with stats -> uses left
};

// Parses a calibration file (formats::ParseCalibrationFile) into the set;
// empty bytes give an empty set.
absl::StatusOr<CalibrationSet> ParseCalibration(std::string_view bytes);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_CALIBRATION_H_
