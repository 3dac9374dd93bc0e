// The scales of binarize and ternarize are means of |w| summed in double in
// row order. Summing in another order would change the last bits of the sum,
// and through them now and then a scale or a rounding, so the order stays;
// but a plain loop then waits for each add before the next and runs at a
// third of memory speed. AddAbsInOrder gives the plain loop's result, bit
// for bit, several adds at a time.
#ifndef BONSAI_SERVER_METHODS_ORDERED_SUM_H_
#define BONSAI_SERVER_METHODS_ORDERED_SUM_H_

#include <vector>

#include "absl/types/span.h"
#include "server/methods/weight_matrix.h"

namespace bonsai::methods {

// What `for (float v : values) sum += std::fabs(v);` returns.
double AddAbsInOrder(double sum, absl::Span<const float> values);

// Each row's sum of |w| from 0, in column order, for any layout.
std::vector<double> RowAbsSums(const MatrixGeometry& geometry, absl::Span<const float> values);

// sum + |w| over row 0, then row 1, ...: one sum over the whole weight.
double AddAbsOfAllRows(double sum, const MatrixGeometry& geometry,
                       absl::Span<const float> values);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_ORDERED_SUM_H_
