#include "server/api/admission.h"

#include "server/observability/metrics.h"

namespace bonsai::api {

absl::StatusOr<std::unique_ptr<engine::JobSlot>> AdmitCall(engine::JobScheduler& scheduler) {
  auto slot = scheduler.Admit();
  if (!slot.ok()) {
    observability::RecordRejected(absl::IsUnavailable(slot.status()) ? "shutting_down"
                                                                     : "queue_full");
  }
  return slot;
}

}  // namespace bonsai::api
