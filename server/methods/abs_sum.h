// The scales of binarize and ternarize are means of |w|, summed in double.
// The order of a floating-point sum sets its last bits, and through them now
// and then a scale or a rounding, so the order is one fixed rule for every
// storage layout: a row's sum is four partial sums, lane k adding the columns
// c = k (mod 4) in column order, combined as (s0 + s1) + (s2 + s3). Four
// independent chains of adds keep up with memory, where one chain (each add
// waiting for the one before) runs at a third of its speed.
#ifndef BONSAI_SERVER_METHODS_ABS_SUM_H_
#define BONSAI_SERVER_METHODS_ABS_SUM_H_

#include <vector>

#include "absl/types/span.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

// The sum of |w| over one row held as a span, in the order above.
double RowAbsSum(absl::Span<const float> row);

// Each row's RowAbsSum, the same bits whatever the weight's layout.
std::vector<double> RowAbsSums(const MatrixGeometry& geometry, absl::Span<const float> values);

// The rows' sums added in row order: one sum over the whole weight.
double AbsSumOfAllRows(const MatrixGeometry& geometry, absl::Span<const float> values);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_ABS_SUM_H_
