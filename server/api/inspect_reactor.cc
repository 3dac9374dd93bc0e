#include "server/api/inspect_reactor.h"

#include "server/api/admission.h"
#include "server/api/status_util.h"
#include "server/engine/inspect_job.h"

namespace bonsai::api {

InspectReactor* InspectReactor::Start(const ServiceContext& context,
                                      v1::InspectResponse* response) {
  std::shared_ptr<InspectReactor> reactor(new InspectReactor(context, response));
  reactor->self_ = reactor;
  context.calls->Add(reactor);
  reactor->StartRead(&reactor->request_);
  return reactor.get();
}

InspectReactor::InspectReactor(const ServiceContext& context, v1::InspectResponse* response)
    : context_(context),
      response_(response),
      model_("model", "max_model_bytes", context.options.max_model_bytes) {}

void InspectReactor::OnReadDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
  }
  if (!ok) {
    if (cancel_.cancelled()) return;
    absl::Status complete = model_.CheckComplete();
    if (complete.ok() && model_.size() == 0) {
      complete = absl::InvalidArgumentError(
          "no model bytes arrived; send the model as model_chunk messages");
    }
    if (!complete.ok()) {
      FinishOnce(complete);
      return;
    }
    if (!slot_) {  // no spec was sent: admit now
      auto slot = AdmitCall(*context_.scheduler);
      if (!slot.ok()) return FinishOnce(slot.status());
      slot_ = std::move(*slot);
    }
    context_.scheduler->Run([self = shared_from_this()] { self->RunJob(); });
    return;
  }
  if (absl::Status status = HandleRequest(); !status.ok()) {
    FinishOnce(status);
    return;
  }
  StartRead(&request_);
}

absl::Status InspectReactor::HandleRequest() {
  switch (request_.payload_case()) {
    case v1::InspectRequest::kSpec: {
      if (have_spec_ || model_.size() > 0) {
        return absl::InvalidArgumentError(
            "an InspectSpec may come only once, as the first message");
      }
      have_spec_ = true;
      spec_ = request_.spec();
      if (auto status = DeclareUpload(model_, spec_.model_size_bytes()); !status.ok()) {
        return status;
      }
      auto slot = AdmitCall(*context_.scheduler);
      if (!slot.ok()) return slot.status();
      slot_ = std::move(*slot);
      return absl::OkStatus();
    }
    case v1::InspectRequest::kModelChunk: {
      return AcceptChunk(model_, request_.model_chunk(), context_.options.max_chunk_bytes);
    }
    case v1::InspectRequest::PAYLOAD_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("an InspectRequest carried no payload");
}

void InspectReactor::RunJob() {
  if (cancel_.cancelled()) return FinishOnce(absl::CancelledError("the call was cancelled"));
  auto result = engine::RunInspectJob(spec_, model_.Take(), cancel_);
  {
    // gRPC owns response_ only until the call ends: write it while holding
    // the flag that says the call has not ended.
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    if (result.ok()) *response_ = std::move(*result);
  }
  Finish(ToGrpcStatus(result.status()));
}

void InspectReactor::FinishOnce(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
  }
  Finish(ToGrpcStatus(status));
}

void InspectReactor::OnCancel() {
  cancel_.Cancel();
  FinishOnce(absl::CancelledError("the client cancelled the call or its deadline passed"));
}

void InspectReactor::Abort(const absl::Status& status) {
  cancel_.Cancel();
  FinishOnce(status);
}

void InspectReactor::OnDone() {
  context_.calls->Remove(this);
  self_.reset();  // may delete this: nothing may follow
}

}  // namespace bonsai::api
