// A flag the gRPC side raises when the client goes away (or the server
// shuts down) and the job polls between tensors and blocks of work.
#ifndef BONSAI_SERVER_ENGINE_CANCELLATION_H_
#define BONSAI_SERVER_ENGINE_CANCELLATION_H_

#include <atomic>

#include "absl/status/status.h"

namespace bonsai::engine {

class CancellationToken {
 public:
  void Cancel() { cancelled_.store(true, std::memory_order_release); }
  bool cancelled() const { return cancelled_.load(std::memory_order_acquire); }
  absl::Status CheckNotCancelled() const {
    return cancelled() ? absl::CancelledError("the job was cancelled") : absl::OkStatus();
  }

 private:
  std::atomic<bool> cancelled_{false};
};

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_CANCELLATION_H_
