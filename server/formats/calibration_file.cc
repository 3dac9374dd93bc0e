#include "server/formats/calibration_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/formats/safetensors_header.h"
#include "server/tensor/dtype.h"
#include "server/tensor/gram.h"

namespace bonsai::formats {
namespace {

constexpr absl::string_view kGramSuffix = ".gram";
constexpr absl::string_view kSamplesSuffix = ".samples";

absl::Status Invalid(absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("calibration file: ", what));
}

bool StripSuffix(absl::string_view name, absl::string_view suffix, std::string* base) {
  if (!absl::EndsWith(name, suffix) || name.size() == suffix.size()) return false;
  *base = std::string(name.substr(0, name.size() - suffix.size()));
  return true;
}

// What the file says about one weight, before it becomes CalibrationStats.
struct Accumulated {
  CalibrationEntry stats;  // gram summed over the entries seen
  std::optional<uint64_t> gram_samples;  // from W.samples
  uint64_t activation_rows = 0;
  bool has_data = false;
};

// What the Gram matrices of one file may cost in memory (see
// kMinCalibrationGramBudgetBytes in the header): the activations' d x d is
// allocated before a row is read, so an entry [1, 100000] of 400 KB would
// otherwise ask for 40 GB.
class GramBudget {
 public:
  explicit GramBudget(uint64_t file_bytes)
      : left_(std::max(kMinCalibrationGramBudgetBytes,
                       file_bytes > UINT64_MAX / 2 ? UINT64_MAX : 2 * file_bytes)) {}

  absl::Status Take(const std::string& entry, int64_t dim) {
    const uint64_t d = static_cast<uint64_t>(dim);
    if (d != 0 && d > left_ / sizeof(float) / d) {  // 4·d² > left_, without overflow
      return Invalid(absl::StrCat(
          "'", entry, "' needs a ", dim, " x ", dim,
          " float32 Gram matrix, beyond what one calibration file may ask the server to hold "
          "(twice the file's size, at least ", kMinCalibrationGramBudgetBytes >> 20,
          " MiB, for all its Gram matrices); send at least d_in / 2 rows of activations, or "
          "their Gram matrix as '<weight>.gram'"));
    }
    left_ -= d * d * sizeof(float);
    return absl::OkStatus();
  }

 private:
  uint64_t left_;
};

absl::Status StartGram(const std::string& weight, const std::string& entry, int64_t dim,
                       Accumulated& acc, GramBudget& budget) {
  if (!acc.has_data) {
    if (auto s = budget.Take(entry, dim); !s.ok()) return s;
    acc.stats.dim = dim;
    acc.stats.gram.assign(static_cast<size_t>(dim) * dim, 0.0f);
    acc.has_data = true;
  } else if (acc.stats.dim != dim) {
    return Invalid(absl::StrCat("'", entry, "' has dimension ", dim, " but other data for '",
                                weight, "' has dimension ", acc.stats.dim));
  }
  return absl::OkStatus();
}

absl::Status CheckFloat(const SafetensorsEntry& entry) {
  if (tensor::IsFloating(entry.dtype)) return absl::OkStatus();
  return Invalid(absl::StrCat("'", entry.name, "' has dtype ", entry.dtype_name,
                              "; calibration data must be F32, F16, BF16 or F64"));
}

absl::Status AddActivations(const SafetensorsEntry& entry, std::string_view data,
                            Accumulated& acc, GramBudget& budget) {
  if (entry.shape.size() != 2) {
    return Invalid(absl::StrCat("activations '", entry.name, "' have rank ", entry.shape.size(),
                                "; send them as [n, d_in] (flatten batch and sequence axes)"));
  }
  if (auto s = CheckFloat(entry); !s.ok()) return s;
  const int64_t n = entry.shape[0], d = entry.shape[1];
  if (auto s = StartGram(entry.name, entry.name, d, acc, budget); !s.ok()) return s;
  if (auto s = tensor::AddRowsToGram(entry.dtype, data.data() + entry.begin, n, d,
                                     absl::MakeSpan(acc.stats.gram));
      !s.ok()) {
    return s;
  }
  acc.activation_rows += static_cast<uint64_t>(n);
  return absl::OkStatus();
}

absl::Status AddGram(const std::string& weight, const SafetensorsEntry& entry,
                     std::string_view data, Accumulated& acc, GramBudget& budget) {
  if (entry.shape.size() != 2 || entry.shape[0] != entry.shape[1]) {
    std::string shape;
    for (int64_t dim : entry.shape) absl::StrAppend(&shape, shape.empty() ? "" : ", ", dim);
    return Invalid(absl::StrCat("Gram matrix '", entry.name, "' has shape [", shape,
                                "]; it must be square, [d_in, d_in]"));
  }
  if (auto s = CheckFloat(entry); !s.ok()) return s;
  const int64_t d = entry.shape[0];
  if (auto s = StartGram(weight, entry.name, d, acc, budget); !s.ok()) return s;
  return tensor::AddEncodedMatrix(entry.dtype, data.data() + entry.begin,
                                  absl::MakeSpan(acc.stats.gram));
}

absl::StatusOr<uint64_t> ReadSamples(const SafetensorsEntry& entry,
                                     std::string_view data) {
  if (entry.count != 1) {
    return Invalid(absl::StrCat("'", entry.name, "' must hold one number (the sample count); it holds ",
                                entry.count));
  }
  const unsigned char* p = reinterpret_cast<const unsigned char*>(data.data() + entry.begin);
  double value = 0.0;
  if (entry.dtype_name == "I64") {
    uint64_t bits = 0;
    for (int i = 7; i >= 0; --i) bits = (bits << 8) | p[i];
    const int64_t v = static_cast<int64_t>(bits);
    if (v < 0) return Invalid(absl::StrCat("'", entry.name, "' is negative (", v, ")"));
    return static_cast<uint64_t>(v);
  }
  if (entry.dtype_name == "F64" || entry.dtype_name == "F32") {
    float f = 0.0f;
    if (auto s = tensor::DecodeToFloat(entry.dtype, p, 1, absl::MakeSpan(&f, 1)); !s.ok()) return s;
    if (entry.dtype_name == "F64") {
      std::memcpy(&value, p, sizeof value);  // keep integers above 2^24 exact
    } else {
      value = f;
    }
    if (!(value >= 0.0 && value == std::floor(value) && value < 1.8e19)) {
      return Invalid(absl::StrCat("'", entry.name, "' must be a non-negative integer; got ", value));
    }
    return static_cast<uint64_t>(value);
  }
  return Invalid(absl::StrCat("'", entry.name, "' has dtype ", entry.dtype_name,
                              "; send the sample count as I64, F64 or F32"));
}

}  // namespace

absl::StatusOr<CalibrationFile> ParseCalibrationFile(std::string_view bytes) {
  constexpr absl::string_view kGramOfSuffix = ".gram_of";
  CalibrationFile file;
  if (bytes.empty()) return file;
  if (!LooksLikeSafetensors(bytes)) {
    return Invalid("not a safetensors file; write the layer inputs or Gram matrices with "
                   "safetensors (see bonsai.calibration.write_calibration)");
  }
  absl::StatusOr<SafetensorsHeader> header = ParseSafetensorsHeader(bytes);
  if (!header.ok()) return Invalid(header.status().message());
  const std::string_view data = bytes.substr(header->data_start);

  absl::flat_hash_map<std::string, Accumulated> weights;
  GramBudget budget(bytes.size());
  for (const SafetensorsEntry& entry : header->entries) {
    std::string weight;
    absl::Status status;
    if (StripSuffix(entry.name, kSamplesSuffix, &weight)) {
      absl::StatusOr<uint64_t> samples = ReadSamples(entry, data);
      if (!samples.ok()) return samples.status();
      weights[weight].gram_samples = *samples;
    } else if (StripSuffix(entry.name, kGramSuffix, &weight)) {
      status = AddGram(weight, entry, data, weights[weight], budget);
    } else {
      status = AddActivations(entry, data, weights[entry.name], budget);
    }
    if (!status.ok()) return status;
  }
  if (header->metadata.is_object()) {
    for (const auto& [key, value] : header->metadata.items()) {
      std::string weight;
      if (!StripSuffix(key, kSamplesSuffix, &weight)) continue;
      Accumulated& acc = weights[weight];
      if (acc.gram_samples) continue;  // the tensor wins
      uint64_t samples = 0;
      if (!absl::SimpleAtoi(value.get<std::string>(), &samples)) {
        return Invalid(absl::StrCat("__metadata__ \"", key, "\" must be a non-negative integer; got \"",
                                    value.get<std::string>(), "\""));
      }
      acc.gram_samples = samples;
    }
  }

  for (auto& [weight, acc] : weights) {
    if (!acc.has_data) {
      return Invalid(absl::StrCat("'", weight, ".samples' is given but neither '", weight,
                                  ".gram' nor activations '", weight, "'"));
    }
    if (!tensor::AllFinite(acc.stats.gram)) {
      return Invalid(absl::StrCat("the Gram matrix of '", weight,
                                  "' contains NaN or infinity in float32; check the calibration "
                                  "inputs (or average them before summing)"));
    }
    acc.stats.samples = acc.gram_samples.value_or(0) + acc.activation_rows;
    file.weights.emplace(weight, std::move(acc.stats));
  }
  // Aliases: weights that read the same input (q/k/v, gate/up) share one
  // Gram matrix in the file.
  if (header->metadata.is_object()) {
    for (const auto& [key, value] : header->metadata.items()) {
      std::string weight;
      if (!StripSuffix(key, kGramOfSuffix, &weight)) continue;
      const std::string source = value.get<std::string>();
      if (file.weights.contains(weight)) {
        return Invalid(absl::StrCat("'", weight, "' has its own statistics and also \"", key,
                                    "\"; give one or the other"));
      }
      if (!file.weights.contains(source)) {
        return Invalid(absl::StrCat("__metadata__ \"", key, "\" names '", source,
                                    "', which has no Gram matrix or activations in the file; "
                                    "alias a weight whose statistics the file holds"));
      }
      file.aliases.emplace(weight, source);
    }
  }
  return file;
}

}  // namespace bonsai::formats
