#include "server/engine/calibration.h"

#include <algorithm>

#include "server/formats/calibration_file.h"

namespace bonsai::engine {

const std::string& CalibrationSet::Resolve(std::string_view weight_name) const {
  static const std::string kNone;
  const absl::string_view name(weight_name.data(), weight_name.size());
  auto alias = alias_of_.find(name);
  if (alias != alias_of_.end()) return alias->second;
  auto it = stats_.find(name);
  return it == stats_.end() ? kNone : it->first;
}

const methods::CalibrationStats* CalibrationSet::Find(std::string_view weight_name) const {
  const std::string& source = Resolve(weight_name);
  auto it = stats_.find(source);
  return source.empty() || it == stats_.end() ? nullptr : &it->second;
}

std::unique_ptr<methods::CalibrationStats> CalibrationSet::TakeForApply(
    std::string_view weight_name) {
  const std::string source = Resolve(weight_name);
  auto it = stats_.find(source);
  if (source.empty() || it == stats_.end()) return nullptr;
  if (--users_[source] <= 0) {
    auto last = std::make_unique<methods::CalibrationStats>(std::move(it->second));
    stats_.erase(it);
    return last;
  }
  return std::make_unique<methods::CalibrationStats>(it->second);
}

uint64_t CalibrationSet::bytes() const {
  uint64_t total = 0, largest_shared = 0;
  for (const auto& [name, stats] : stats_) {
    const uint64_t bytes = stats.gram.size() * sizeof(float);
    total += bytes;
    auto users = users_.find(name);
    if (users != users_.end() && users->second > 1) largest_shared = std::max(largest_shared, bytes);
  }
  return total + largest_shared;
}

std::vector<std::string> CalibrationSet::WeightNames() const {
  std::vector<std::string> names;
  for (const auto& [name, stats] : stats_) names.push_back(name);
  for (const auto& [name, source] : alias_of_) names.push_back(name);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<CalibrationSet> ParseCalibration(std::string_view bytes) {
  absl::StatusOr<formats::CalibrationFile> file = formats::ParseCalibrationFile(bytes);
  if (!file.ok()) return file.status();
  CalibrationSet set;
  for (auto& [weight, entry] : file->weights) {
    set.users_[weight] = 1;
    set.stats_.emplace(weight, methods::CalibrationStats{std::move(entry.gram), entry.dim, entry.samples});
  }
  // A method may consume its statistics in place, so each user of a shared
  // Gram matrix but the last gets a copy when it applies (TakeForApply).
  for (auto& [weight, source] : file->aliases) {
    ++set.users_[source];
    set.alias_of_.emplace(weight, std::move(source));
  }
  return set;
}

}  // namespace bonsai::engine
