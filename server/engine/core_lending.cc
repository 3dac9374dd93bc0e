#include "server/engine/core_lending.h"

#include <algorithm>

namespace bonsai::engine {

CoreLending::CoreLending(int cores) : cores_(std::max(1, cores)) { tensor::SetCoreLender(this); }

CoreLending::~CoreLending() {
  if (tensor::core_lender() == this) tensor::SetCoreLender(nullptr);
}

bool CoreLending::TryBorrow() {
  int lent = lent_.load();
  for (;;) {
    if (std::max(1, computing_.load()) + lent >= cores_) return false;
    if (lent_.compare_exchange_weak(lent, lent + 1)) return true;
  }
}

}  // namespace bonsai::engine
