#include "server/api/compress_reactor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/api/admission.h"
#include "server/api/call_outcome.h"
#include "server/api/status_util.h"
#include "server/observability/metrics.h"

namespace bonsai::api {
namespace {

constexpr auto kReceiveProgressInterval = std::chrono::milliseconds(500);

double Seconds(std::chrono::steady_clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

CompressReactor* CompressReactor::Start(const ServiceContext& context,
                                        grpc::CallbackServerContext* call) {
  std::shared_ptr<CompressReactor> reactor(new CompressReactor(context, call));
  reactor->self_ = reactor;
  context.calls->Add(reactor);
  reactor->StartRead(&reactor->request_);
  return reactor.get();
}

CompressReactor::CompressReactor(const ServiceContext& context,
                                 grpc::CallbackServerContext* call)
    : context_(context),
      call_(call),
      model_("model", "max_model_bytes", context.options.max_model_bytes),
      calibration_("calibration data", "max_calibration_bytes",
                   context.options.max_calibration_bytes) {}

void CompressReactor::OnReadDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return;
  }
  if (!ok) {  // the client half-closed: the upload is complete
    if (cancel_.cancelled()) return;
    if (phase_ == Phase::kAwaitSpec) {
      FinishWith(absl::InvalidArgumentError(
          "the stream ended before any CompressionSpec; send the spec as the first message"));
      return;
    }
    absl::Status complete = model_.CheckComplete();
    if (complete.ok()) complete = calibration_.CheckComplete();
    if (complete.ok() && model_.size() == 0) {
      complete = absl::InvalidArgumentError(
          "no model bytes arrived; send the model as model_chunk messages after the spec");
    }
    if (!complete.ok()) {
      FinishWith(complete);
      return;
    }
    StartJob();
    return;
  }
  if (absl::Status status = HandleRequest(); !status.ok()) {
    phase_ = Phase::kEnded;
    FinishWith(status);
    return;
  }
  StartRead(&request_);
}

absl::Status CompressReactor::HandleRequest() {
  switch (request_.payload_case()) {
    case v1::CompressRequest::kSpec:
      return HandleSpec(request_.spec());
    case v1::CompressRequest::kModelChunk:
    case v1::CompressRequest::kCalibrationChunk: {
      if (phase_ != Phase::kReceiving) {
        return absl::InvalidArgumentError(
            "data arrived before the CompressionSpec; send the spec as the first message");
      }
      const bool is_model = request_.payload_case() == v1::CompressRequest::kModelChunk;
      const std::string& chunk = is_model ? request_.model_chunk() : request_.calibration_chunk();
      UploadBuffer& buffer = is_model ? model_ : calibration_;
      if (absl::Status status = AcceptChunk(buffer, chunk, context_.options.max_chunk_bytes);
          !status.ok()) {
        return status;
      }
      const auto now = Clock::now();
      if (now - last_receive_progress_ >= kReceiveProgressInterval) {
        last_receive_progress_ = now;
        const uint64_t total = model_.declared() + calibration_.declared();
        const uint64_t done = model_.size() + calibration_.size();
        QueueProgress(v1::STAGE_RECEIVING, total ? std::min(1.0, double(done) / total) : 0.0,
                      "");
      }
      return absl::OkStatus();
    }
    case v1::CompressRequest::PAYLOAD_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("a CompressRequest carried no payload");
}

absl::Status CompressReactor::HandleSpec(const v1::CompressionSpec& spec) {
  if (phase_ != Phase::kAwaitSpec) {
    return absl::InvalidArgumentError(
        "a second CompressionSpec arrived; send exactly one, as the first message");
  }
  auto validated = engine::ValidateSpec(spec);
  if (!validated.ok()) return validated.status();
  {
    absl::MutexLock lock(&mu_);
    method_label_ = spec.method().empty() ? "recipe" : spec.method();
  }
  spec_ = std::make_shared<engine::ValidatedSpec>(std::move(*validated));
  for (UploadBuffer* buffer : {&model_, &calibration_}) {
    const uint64_t declared =
        buffer == &model_ ? spec.model_size_bytes() : spec.calibration_size_bytes();
    if (absl::Status status = DeclareUpload(*buffer, declared); !status.ok()) return status;
  }
  auto slot = AdmitCall(*context_.scheduler);
  if (!slot.ok()) return slot.status();
  slot_ = std::move(*slot);
  phase_ = Phase::kReceiving;
  receive_start_ = last_receive_progress_ = Clock::now();
  QueueProgress(v1::STAGE_RECEIVING, 0.0, "");
  return absl::OkStatus();
}

void CompressReactor::StartJob() {
  phase_ = Phase::kJob;
  queued_at_ = Clock::now();
  observability::RecordStageSeconds(observability::JobStage::kReceive,
                                    Seconds(queued_at_ - receive_start_));
  observability::RecordModelBytes(model_.size());
  QueueProgress(v1::STAGE_QUEUED, 0.0, "");
  context_.scheduler->Run([self = shared_from_this()] { self->RunJob(); });
}

void CompressReactor::RunJob() {
  const double queue_seconds = Seconds(Clock::now() - queued_at_);
  observability::RecordStageSeconds(observability::JobStage::kQueueWait, queue_seconds);
  if (cancel_.cancelled()) {
    CompleteJob(absl::CancelledError("the job was cancelled before it started"));
    return;
  }
  engine::CompressionInput input;
  input.spec = spec_.get();
  input.model_bytes = model_.Take();
  input.calibration_bytes = calibration_.Take();
  input.queue_seconds = queue_seconds;
  input.receive_seconds = Seconds(queued_at_ - receive_start_);
  auto result = engine::RunCompressionJob(
      std::move(input),
      [this](v1::Stage stage, double fraction, std::string_view detail) {
        QueueProgress(stage, fraction, detail);
      },
      cancel_);
  CompleteJob(std::move(result));
}

void CompressReactor::QueueProgress(v1::Stage stage, double fraction, std::string_view detail) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || job_succeeded_) return;
    // Updates within one stage and tensor replace each other while they
    // wait, so a slow reader costs no memory; a new stage or tensor always
    // gets its own event, so every tensor is reported at least once.
    if (pending_progress_.empty() || pending_progress_.back().stage() != stage ||
        pending_progress_.back().detail() != detail) {
      pending_progress_.emplace_back();
    }
    v1::Progress& progress = pending_progress_.back();
    progress.set_stage(stage);
    progress.set_fraction(fraction);
    progress.set_detail(std::string(detail));
    if (write_in_flight_) return;  // OnWriteDone sends it
  }
  Pump();
}

void CompressReactor::CompleteJob(absl::StatusOr<engine::CompressionOutput> result) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return;
    if (result.ok()) {
      const double zstd = double(result->report.totals().model_bytes_out_zstd());
      if (zstd > 0) {
        observability::RecordCompressionRatio(result->report.totals().model_bytes_in() / zstd);
      }
      format_label_ = result->report.format();
      pending_report_ = std::move(result->report);
      output_ = std::move(result->model);
      job_succeeded_ = true;
      send_start_ = Clock::now();
    } else {
      final_status_ = result.status();
    }
  }
  Pump();
}

void CompressReactor::FinishWith(const absl::Status& status) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return;
    final_status_ = status;
  }
  Pump();
}

void CompressReactor::Pump() {
  enum class Action { kNone, kWrite, kFinish } action = Action::kNone;
  absl::Status outcome;
  {
    absl::MutexLock lock(&mu_);
    if (write_in_flight_ || finish_called_) return;
    if (final_status_) {
      outcome = *final_status_;
      action = Action::kFinish;
    } else if (!pending_progress_.empty()) {
      response_.Clear();
      *response_.mutable_progress() = std::move(pending_progress_.front());
      pending_progress_.pop_front();
      action = Action::kWrite;
    } else if (pending_report_) {
      response_.Clear();
      *response_.mutable_report() = std::move(*pending_report_);
      pending_report_.reset();
      action = Action::kWrite;
    } else if (job_succeeded_ && output_offset_ < output_.size()) {
      const size_t length =
          std::min<size_t>(context_.options.send_chunk_bytes, output_.size() - output_offset_);
      response_.Clear();
      response_.set_model_chunk(output_.data() + output_offset_, length);
      output_offset_ += length;
      observability::RecordSentBytes(length);
      action = Action::kWrite;
    } else if (job_succeeded_) {
      observability::RecordStageSeconds(observability::JobStage::kSend,
                                        Seconds(Clock::now() - send_start_));
      std::string().swap(output_);
      action = Action::kFinish;
    }
    if (action == Action::kWrite) write_in_flight_ = true;
    if (action == Action::kFinish) {
      finish_called_ = true;
      sent_status_ = outcome;
    }
  }
  switch (action) {
    case Action::kNone:
      return;
    case Action::kWrite:
      StartWrite(&response_);
      return;
    case Action::kFinish:
      Finish(ToGrpcStatus(outcome));
      return;
  }
}

void CompressReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (!ok && !final_status_) {
      final_status_ = absl::CancelledError("the client stopped receiving");
    }
  }
  if (!ok) cancel_.Cancel();
  Pump();
}

void CompressReactor::OnCancel() {
  cancel_.Cancel();
  FinishWith(absl::CancelledError("the client cancelled the call or its deadline passed"));
}

void CompressReactor::Abort(const absl::Status& status) {
  cancel_.Cancel();
  FinishWith(status);
}

void CompressReactor::OnDone() {
  context_.calls->Remove(this);
  {
    // Counted here, not at Finish: a client that vanished mid-upload shows
    // up as a short upload (OnReadDone) before OnCancel says why, and only
    // now does IsCancelled() tell the two apart.
    absl::MutexLock lock(&mu_);
    const absl::Status outcome =
        call_->IsCancelled() ? absl::CancelledError("client gone") : sent_status_;
    RecordCallOutcome(method_label_, format_label_, outcome);
  }
  // Frees the upload and output now unless the job still runs; then the
  // worker's reference frees them when it returns.
  self_.reset();  // may delete this: nothing may follow
}

}  // namespace bonsai::api
