#include "server/methods/quant_grid.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/methods/simd.h"

namespace bonsai::methods {
namespace {

using simd::Floats;

Floats Splat(float x) { return Floats{x, x, x, x}; }

Floats Load(const float* p) {
  Floats v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void Store(float* p, Floats v) { std::memcpy(p, &v, sizeof v); }

// The scalar rule of Quantize on four lanes; every step is the same IEEE
// operation, so the lanes give the scalar results bit for bit.
Floats QuantizeLanes(Floats v, Floats scale, Floats low, Floats high) {
  const Floats shift = Splat(12582912.0f);
  Floats t = (v / scale + shift) - shift;
  t = t < low ? low : t;
  t = t > high ? high : t;
  return scale * t;
}

}  // namespace

Grid ChooseGrid(float lo, float hi, const QuantSpec& spec) {
  Grid grid;
  if (spec.symmetric) {
    const float half = static_cast<float>(1 << (spec.bits - 1));
    grid.scale = std::max(-lo, hi) / (half - 1.0f);
    grid.zero = half;
  } else {
    const float max_code = spec.max_code();
    grid.scale = (hi - lo) / max_code;
    if (grid.scale == 0.0f) grid.scale = 1.0f;
    const float zero = RoundHalfEven(-lo / grid.scale);
    grid.zero = zero < 0.0f ? 0.0f : (zero > max_code ? max_code : zero);
    return grid;
  }
  if (grid.scale == 0.0f) grid.scale = 1.0f;
  return grid;
}

void RangeWithZero(absl::Span<const float> values, float* lo, float* hi) {
  Floats low = Splat(0.0f), high = Splat(0.0f);
  size_t i = 0;
  for (; i + simd::kLanes <= values.size(); i += simd::kLanes) {
    const Floats v = Load(values.data() + i);
    low = v < low ? v : low;
    high = v > high ? v : high;
  }
  float l = std::min({low[0], low[1], low[2], low[3]});
  float h = std::max({high[0], high[1], high[2], high[3]});
  for (; i < values.size(); ++i) {
    l = values[i] < l ? values[i] : l;
    h = values[i] > h ? values[i] : h;
  }
  *lo = l;
  *hi = h;
}

void QuantizeSpan(absl::Span<float> values, const Grid& grid, float max_code) {
  const Floats scale = Splat(grid.scale), low = Splat(0.0f - grid.zero),
               high = Splat(max_code - grid.zero);
  size_t i = 0;
  for (; i + simd::kLanes <= values.size(); i += simd::kLanes) {
    Store(values.data() + i, QuantizeLanes(Load(values.data() + i), scale, low, high));
  }
  for (; i < values.size(); ++i) values[i] = Quantize(values[i], grid, max_code);
}

void QuantizeRow(absl::Span<float> row, const QuantSpec& spec, Grid* grids) {
  const int64_t d = static_cast<int64_t>(row.size());
  const int64_t width = spec.GroupColumns(d);
  const float max_code = spec.max_code();
  for (int64_t first = 0; first < d; first += width) {
    const absl::Span<float> group = row.subspan(first, std::min(width, d - first));
    float lo, hi;
    RangeWithZero(group, &lo, &hi);
    const Grid grid = ChooseGrid(lo, hi, spec);
    if (grids != nullptr) grids[first / width] = grid;
    QuantizeSpan(group, grid, max_code);
  }
}

formats::PackingHint QuantizedPacking(const QuantSpec& spec, int64_t rows, int64_t d,
                                      const std::vector<Grid>& grids) {
  auto quant = std::make_shared<formats::QuantGrids>();
  quant->bits = spec.bits;
  quant->symmetric = spec.symmetric;
  quant->group_size = spec.group_size;
  quant->group_columns = spec.GroupColumns(d);
  quant->rows = rows;
  quant->groups = GroupCount(d, spec);
  quant->scales.reserve(grids.size());
  quant->zeros.reserve(grids.size());
  for (const Grid& grid : grids) {
    quant->scales.push_back(grid.scale);
    quant->zeros.push_back(grid.zero);
  }
  formats::PackingHint hint;
  hint.packing = formats::Packing::kQuantized;
  hint.quant = std::move(quant);
  return hint;
}

absl::Status CheckQuantizable(absl::string_view method, absl::string_view tensor,
                              absl::Span<const float> values) {
  // |w| < 2^126 keeps hi - lo finite; NaN fails the comparison too.
  const Floats limit = Splat(0x1p126f);
  simd::Masks fine = {-1, -1, -1, -1};
  size_t i = 0;
  for (; i + simd::kLanes <= values.size(); i += simd::kLanes) {
    const simd::Bits magnitude = simd::LoadBits(values.data() + i) & ~simd::kSignBit;
    fine &= simd::AsFloats(magnitude) < limit;
  }
  bool ok = (fine[0] & fine[1] & fine[2] & fine[3]) != 0;
  for (; i < values.size(); ++i) ok = ok && std::fabs(values[i]) < 0x1p126f;
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      method, " cannot quantize tensor '", tensor,
      "': it holds NaN, infinity or a weight of magnitude >= 2^126. Fix the model's "
      "weights or exclude the tensor from the selection."));
}

std::string GroupTailNote(int64_t d, const QuantSpec& spec) {
  const int64_t width = spec.GroupColumns(d);
  if (d == 0 || d % width == 0) return "";
  return absl::StrCat("groups of ", width, " along ", d,
                      " reduction columns: the last group of each row has ", d % width);
}

}  // namespace bonsai::methods
