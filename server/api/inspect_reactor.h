// The Inspect stream: the same upload as Compress (spec, then chunks, with
// the same limits), parsed on a worker, answered with one InspectResponse.
#ifndef BONSAI_SERVER_API_INSPECT_REACTOR_H_
#define BONSAI_SERVER_API_INSPECT_REACTOR_H_

#include <chrono>
#include <string>

#include <grpcpp/grpcpp.h>

#include <memory>
#include <optional>

#include "absl/synchronization/mutex.h"
#include "bonsai/v1/compressor.grpc.pb.h"
#include "server/api/active_calls.h"
#include "server/api/admission.h"
#include "server/api/job_stage.h"
#include "server/api/service_context.h"
#include "server/api/upload_files.h"
#include "server/engine/cancellation.h"

namespace bonsai::api {

class InspectReactor : public grpc::ServerReadReactor<v1::InspectRequest>,
                       public AbortableCall,
                       public std::enable_shared_from_this<InspectReactor> {
 public:
  static InspectReactor* Start(const ServiceContext& context, grpc::CallbackServerContext* call,
                               v1::InspectResponse* response);

  void OnReadDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void Abort(const absl::Status& status) override;
  std::optional<observability::AdmittedStage> stage() const override { return stage_.stage(); }

 private:
  InspectReactor(const ServiceContext& context, grpc::CallbackServerContext* call,
                 v1::InspectResponse* response);
  absl::Status HandleRequest();
  void RunJob();  // on a worker
  void FinishOnce(const absl::Status& status);

  ServiceContext context_;
  grpc::CallbackServerContext* call_;
  v1::InspectResponse* response_;
  std::shared_ptr<InspectReactor> self_;
  engine::CancellationToken cancel_;
  v1::InspectRequest request_;
  bool have_spec_ = false;
  v1::InspectSpec spec_;
  UploadFiles uploads_;
  std::unique_ptr<AdmittedJob> slot_;
  JobStage stage_;

  absl::Mutex mu_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;

  // For the one log line per call (OnDone).
  const uint64_t job_id_;
  const std::string peer_;
  const std::chrono::steady_clock::time_point call_start_ = std::chrono::steady_clock::now();
  absl::Status sent_status_ ABSL_GUARDED_BY(mu_);
  std::string format_ ABSL_GUARDED_BY(mu_) = "unknown";
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_INSPECT_REACTOR_H_
