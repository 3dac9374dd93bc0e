#include "server/api/inspect_reactor.h"

#include "server/api/admission.h"
#include "server/api/status_util.h"
#include "server/engine/inspect_job.h"
#include "server/observability/job_log.h"

namespace bonsai::api {

InspectReactor* InspectReactor::Start(const ServiceContext& context,
                                      grpc::CallbackServerContext* call,
                                      v1::InspectResponse* response) {
  std::shared_ptr<InspectReactor> reactor(new InspectReactor(context, call, response));
  reactor->self_ = reactor;
  context.calls->Add(reactor);
  reactor->StartRead(&reactor->request_);
  return reactor.get();
}

InspectReactor::InspectReactor(const ServiceContext& context, grpc::CallbackServerContext* call,
                               v1::InspectResponse* response)
    : context_(context),
      call_(call),
      response_(response),
      uploads_(context_.options),
      job_id_(observability::NextJobId()),
      peer_(call->peer()) {}

void InspectReactor::OnReadDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
  }
  if (!ok) {
    if (cancel_.cancelled()) return;
    if (!have_spec_) {
      FinishOnce(absl::InvalidArgumentError(
          "the stream ended before any InspectSpec; send the spec as the first message"));
      return;
    }
    if (absl::Status complete = uploads_.Complete(); !complete.ok()) {
      FinishOnce(complete);
      return;
    }
    stage_.UploadComplete();
    context_.scheduler->Run([self = shared_from_this()] { self->RunJob(); });
    return;
  }
  if (absl::Status status = Guarded([this] { return HandleRequest(); }); !status.ok()) {
    FinishOnce(status);
    return;
  }
  StartRead(&request_);
}

absl::Status InspectReactor::HandleRequest() {
  switch (request_.payload_case()) {
    case v1::InspectRequest::kSpec: {
      if (have_spec_) {
        return absl::InvalidArgumentError(
            "an InspectSpec may come only once, as the first message");
      }
      have_spec_ = true;
      spec_ = request_.spec();
      if (auto status = uploads_.Declare(spec_.files(), 0, *context_.spool,
                                         context_.memory_spool, /*allow_header_only=*/true);
          !status.ok()) {
        return status;
      }
      auto slot = AdmitCall(*context_.scheduler, *context_.peers, PeerAddress(call_->peer()));
      if (!slot.ok()) return slot.status();
      slot_ = std::move(*slot);
      stage_.Admitted();
      ArmJobDeadline(context_, shared_from_this());
      return absl::OkStatus();
    }
    case v1::InspectRequest::kFileChunk: {
      if (!have_spec_) {
        return absl::InvalidArgumentError(
            "data arrived before the InspectSpec; send the spec as the first message");
      }
      return uploads_.AcceptFileChunk(request_.file_chunk());
    }
    case v1::InspectRequest::PAYLOAD_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("an InspectRequest carried no payload");
}

void InspectReactor::RunJob() {
  if (cancel_.cancelled()) return FinishOnce(absl::CancelledError("the call was cancelled"));
  const formats::WaitPolicy wait = uploads_.Wait([this] { return cancel_.cancelled(); });
  auto result = [&] {
    auto computing = stage_.Computing();
    return Guarded([&] { return engine::RunInspectJob(spec_, uploads_.InputFiles(wait), cancel_); });
  }();
  // The work is over: the slot goes back before the client sees the answer.
  slot_.reset();
  stage_.WorkDone();
  {
    // gRPC owns response_ only until the call ends: write it while holding
    // the flag that says the call has not ended.
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    sent_status_ = result.status();
    if (result.ok()) {
      format_ = result->format();
      *response_ = std::move(*result);
    }
  }
  Finish(ToGrpcStatus(result.status(), call_));
}

void InspectReactor::FinishOnce(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    sent_status_ = status;
  }
  Finish(ToGrpcStatus(status, call_));
}

void InspectReactor::OnCancel() {
  cancel_.Cancel();
  uploads_.Fail(absl::CancelledError("the client cancelled the call"));
  FinishOnce(absl::CancelledError("the client cancelled the call or its deadline passed"));
}

void InspectReactor::Abort(const absl::Status& status) {
  cancel_.Cancel();
  FinishOnce(status);
}

void InspectReactor::OnDone() {
  context_.calls->Remove(this);
  {
    absl::MutexLock lock(&mu_);
    RecordCallOutcome("inspect", format_, sent_status_);
    observability::LogJob(
        {job_id_, "Inspect", peer_, "-", format_, uploads_.received_bytes(), 0,
         std::chrono::duration<double>(std::chrono::steady_clock::now() - call_start_).count(),
         sent_status_});
  }
  context_.deadlines->Forget(this);
  self_.reset();  // may delete this: nothing may follow
}

}  // namespace bonsai::api
