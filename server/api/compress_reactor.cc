#include "server/api/compress_reactor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/api/admission.h"
#include "server/api/status_util.h"
#include "server/engine/error_reason.h"
#include "server/observability/job_log.h"
#include "server/observability/metrics.h"
#include "server/storage/allocator_tuning.h"

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
      uploads_(context_.options),
      cores_(context_.scheduler, &stage_),
      job_id_(observability::NextJobId()),
      peer_(call->peer()) {}

void CompressReactor::OnReadDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return;
  }
  if (!ok) {  // the client half-closed: the upload is complete
    half_closed_ = true;
    decision_arrived_.SignalAll();
    if (cancel_.cancelled()) return;
    if (phase_ == Phase::kAwaitSpec) {
      FinishWith(absl::InvalidArgumentError(
          "the stream ended before any CompressionSpec; send the spec as the first message"));
      return;
    }
    EndUpload();
    return;
  }
  if (absl::Status status = Guarded([this] { return HandleRequest(); }); !status.ok()) {
    phase_ = Phase::kEnded;
    cancel_.Cancel();
    uploads_.Fail(status);
    FinishWith(status);
    return;
  }
  StartRead(&request_);
}

absl::Status CompressReactor::HandleRequest() {
  switch (request_.payload_case()) {
    case v1::CompressRequest::kSpec:
      return HandleSpec(request_.spec());
    case v1::CompressRequest::kFileChunk:
    case v1::CompressRequest::kCalibrationChunk: {
      if (phase_ != Phase::kReceiving) {
        return absl::InvalidArgumentError(
            "data arrived before the CompressionSpec; send the spec as the first message");
      }
      absl::Status status = request_.payload_case() == v1::CompressRequest::kFileChunk
                                ? uploads_.AcceptFileChunk(request_.file_chunk())
                                : uploads_.AcceptCalibrationChunk(request_.calibration_chunk());
      if (!status.ok()) return status;
      const auto now = Clock::now();
      if (now - last_receive_progress_ >= kReceiveProgressInterval) {
        last_receive_progress_ = now;
        const uint64_t total = uploads_.declared_bytes();
        QueueProgress(v1::STAGE_RECEIVING,
                      total ? std::min(1.0, double(uploads_.received_bytes()) / total) : 0.0, "");
      }
      return absl::OkStatus();
    }
    case v1::CompressRequest::kGlobalDecision:
      return HandleDecision(request_.global_decision());
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
  if (!validated.ok()) {
    return engine::WithReason(validated.status(), engine::ErrorReason::kInvalidSpec);
  }
  {
    absl::MutexLock lock(&mu_);
    method_label_ = spec.method().empty() ? "recipe" : spec.method();
  }
  spec_ = std::make_shared<engine::ValidatedSpec>(std::move(*validated));
  if (absl::Status status = uploads_.Declare(spec.files(), spec.calibration_size_bytes(),
                                             *context_.spool, context_.memory_spool,
                                             /*allow_header_only=*/false);
      !status.ok()) {
    return status;
  }
  auto slot = AdmitCall(*context_.scheduler, *context_.peers, PeerAddress(call_->peer()));
  if (!slot.ok()) return slot.status();
  slot_ = std::move(*slot);
  stage_.Admitted();
  ArmJobDeadline(context_, shared_from_this());
  phase_ = Phase::kReceiving;
  receive_start_ = last_receive_progress_ = Clock::now();
  QueueProgress(v1::STAGE_RECEIVING, 0.0, "");
  // The output streams from the spool as the job writes it; each write
  // wakes the sender. The reactor outlives the job (the job holds it).
  {
    absl::MutexLock lock(&mu_);  // Pump reads it
    output_ = std::make_unique<engine::JobOutput>(uploads_.place(), uploads_.names(),
                                                  uploads_.sizes(), [this] { Pump(); },
                                                  spec_->proto.output_offset_bytes());
  }
  // The job starts now: it reads each tensor as soon as its bytes land.
  QueueProgress(v1::STAGE_QUEUED, 0.0, "");
  context_.scheduler->Run([self = shared_from_this()] { self->RunJob(); });
  return absl::OkStatus();
}

absl::Status CompressReactor::HandleDecision(const v1::GlobalDecision& decision) {
  if (phase_ == Phase::kAwaitSpec) {
    return absl::InvalidArgumentError(
        "a global_decision arrived before the CompressionSpec; send the spec first");
  }
  if (!spec_->proto.exchange_global_cuts()) {
    return absl::InvalidArgumentError(
        "a global_decision arrived for a job whose spec does not set exchange_global_cuts");
  }
  if (++decisions_received_ > 2) {
    return absl::InvalidArgumentError(
        "a third global_decision arrived; a job asks for two (phases 1 and 2), one each");
  }
  {
    absl::MutexLock lock(&mu_);
    decisions_.push_back(decision);
  }
  decision_arrived_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<v1::GlobalDecision> CompressReactor::Exchange(v1::GlobalSummary summary) {
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return absl::CancelledError("the call has ended");
    pending_summaries_.push_back(std::move(summary));
  }
  Pump();
  // The client answers once every job of the checkpoint has sent its
  // summary, which may take as long as the slowest upload: the wait ends
  // only with the answer, the call (client gone, its deadline) or the job.
  absl::MutexLock lock(&mu_);
  while (decisions_.empty()) {
    if (cancel_.cancelled() || finish_called_ || final_status_) {
      return absl::CancelledError("the job was cancelled while waiting for its global decision");
    }
    if (half_closed_) {
      return absl::InvalidArgumentError(
          "the client half-closed before answering a GlobalSummary; with "
          "exchange_global_cuts, send both global_decision messages, then half-close");
    }
    decision_arrived_.WaitWithTimeout(&mu_, absl::Milliseconds(200));
  }
  v1::GlobalDecision decision = std::move(decisions_.front());
  decisions_.pop_front();
  return decision;
}

void CompressReactor::EndUpload() {
  phase_ = Phase::kJob;
  receive_seconds_ = Seconds(Clock::now() - receive_start_);
  observability::RecordStageSeconds(observability::JobStage::kReceive, receive_seconds_);
  observability::RecordModelBytes(uploads_.model_bytes());
  if (absl::Status complete = uploads_.Complete(); !complete.ok()) {
    cancel_.Cancel();
    FinishWith(complete);
    return;
  }
  stage_.UploadComplete();
  {
    absl::MutexLock lock(&mu_);
    upload_verified_ = true;
  }
  Pump();  // the report may have been waiting for this
}

void CompressReactor::RunJob() {
  const double queue_seconds = Seconds(Clock::now() - receive_start_);
  observability::RecordStageSeconds(observability::JobStage::kQueueWait, queue_seconds);
  if (cancel_.cancelled()) {
    CompleteJob(absl::CancelledError("the job was cancelled before it started"));
    return;
  }
  const formats::WaitPolicy wait = uploads_.Wait([this] { return cancel_.cancelled(); });
  engine::CompressionInput input;
  input.spec = spec_.get();
  input.files = uploads_.InputFiles(wait);
  input.calibration = uploads_.Calibration(wait);
  input.output = output_.get();
  input.memory = context_.memory;
  input.cores = &cores_;
  if (spec_->proto.exchange_global_cuts()) input.exchange = this;
  input.queue_seconds = queue_seconds;
  auto result = Guarded([&] {
    return engine::RunCompressionJob(
        std::move(input),
        [this](v1::Stage stage, double fraction, std::string_view detail) {
          QueueProgress(stage, fraction, detail);
        },
        cancel_);
  });
  if (!result.ok()) uploads_.Fail(result.status());  // the upload need not go on
  CompleteJob(std::move(result));
  // The job's buffers were freed here; the worker gives their pages back
  // once this closure is gone (JobScheduler::WorkerLoop).
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

void CompressReactor::CompleteJob(absl::StatusOr<v1::CompressionReport> result) {
  // The job's work is over: its slot goes back now, before the client can
  // see the report or the status, so a client that starts its next job at
  // once is never refused by its own previous one. (The output still
  // streams from the spool, whose room the upload keeps until the call ends.)
  slot_.reset();
  stage_.WorkDone();
  {
    absl::MutexLock lock(&mu_);
    if (finish_called_ || final_status_) return;
    if (result.ok()) {
      const double zstd = double(result->totals().model_bytes_out_zstd());
      if (zstd > 0) {
        observability::RecordCompressionRatio(result->totals().model_bytes_in() / zstd);
      }
      format_label_ = result->format();
      pending_report_ = *std::move(result);
      job_succeeded_ = true;
    } else {
      final_status_ = result.status();
    }
  }
  Pump();
}

bool CompressReactor::NextOutputChunk() {
  while (true) {
    auto file = output_->produced(sending_file_);
    if (!file) return false;
    const uint64_t available = file->data->size();
    if (sending_offset_ < available) {
      const uint64_t length =
          std::min<uint64_t>(context_.options.send_chunk_bytes, available - sending_offset_);
      response_.Clear();
      if (spare_chunk_) response_.set_allocated_file_chunk(spare_chunk_.release());
      v1::FileChunk* chunk = response_.mutable_file_chunk();
      chunk->set_file(file->input_index);
      std::string* data = chunk->mutable_data();
      data->resize(length);
      if (absl::Status status =
              file->data->ReadAt(sending_offset_, absl::MakeSpan(data->data(), length));
          !status.ok()) {
        final_status_ = status;
        return false;
      }
      sending_offset_ += length;
      sent_bytes_ += length;
      observability::RecordSentBytes(length);
      if (!first_chunk_sent_) {
        first_chunk_sent_ = true;
        send_start_ = Clock::now();
      }
      return true;
    }
    if (!file->data->complete()) return false;  // more is coming: on_change wakes us
    ++sending_file_;
    sending_offset_ = 0;
  }
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
    } else if (!pending_summaries_.empty()) {
      response_.Clear();
      *response_.mutable_global_summary() = std::move(pending_summaries_.front());
      pending_summaries_.pop_front();
      action = Action::kWrite;
    } else if (!pending_progress_.empty()) {
      response_.Clear();
      *response_.mutable_progress() = std::move(pending_progress_.front());
      pending_progress_.pop_front();
      action = Action::kWrite;
    } else if (output_ && NextOutputChunk()) {
      action = Action::kWrite;
    } else if (final_status_) {  // reading the spool failed
      outcome = *final_status_;
      action = Action::kFinish;
    } else if (pending_report_ && upload_verified_) {
      // Every file is sent once the job has returned: it ends the last one
      // before it returns, and NextOutputChunk found nothing left.
      const double send_seconds = first_chunk_sent_ ? Seconds(Clock::now() - send_start_) : 0.0;
      observability::RecordStageSeconds(observability::JobStage::kSend, send_seconds);
      pending_report_->mutable_timings()->set_receive_seconds(receive_seconds_);  // EndUpload set it
      pending_report_->mutable_timings()->set_send_seconds(send_seconds);
      pending_report_->mutable_timings()->set_total_seconds(
          Seconds(Clock::now() - receive_start_));
      response_.Clear();
      *response_.mutable_report() = std::move(*pending_report_);
      pending_report_.reset();
      action = Action::kWrite;
    } else if (job_succeeded_ && !pending_report_) {
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
      Finish(ToGrpcStatus(outcome, call_));
      return;
  }
}

void CompressReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    if (response_.has_file_chunk()) spare_chunk_.reset(response_.release_file_chunk());
    if (!ok && !final_status_) {
      final_status_ = absl::CancelledError("the client stopped receiving");
    }
  }
  if (!ok) cancel_.Cancel();
  Pump();
}

void CompressReactor::OnCancel() {
  cancel_.Cancel();
  uploads_.Fail(absl::CancelledError("the client cancelled the call"));
  FinishWith(absl::CancelledError("the client cancelled the call or its deadline passed"));
}

void CompressReactor::Abort(const absl::Status& status) {
  cancel_.Cancel();
  uploads_.Fail(status);
  FinishWith(status);
}

void CompressReactor::OnDone() {
  context_.calls->Remove(this);
  context_.deadlines->Forget(this);
  {
    // Counted here, not at Finish: a client that vanished mid-upload shows
    // up as a short upload (OnReadDone) before OnCancel says why, and only
    // now does IsCancelled() tell the two apart.
    absl::MutexLock lock(&mu_);
    const absl::Status outcome =
        call_->IsCancelled() ? absl::CancelledError("client gone") : sent_status_;
    RecordCallOutcome(method_label_, format_label_, outcome);
    observability::LogJob({job_id_, "Compress", peer_, method_label_, format_label_,
                           uploads_.received_bytes(), sent_bytes_,
                           Seconds(Clock::now() - call_start_), outcome});
  }
  // Frees the upload and output now unless the job still runs; then the
  // worker's reference frees them when it returns (and the worker trims).
  std::shared_ptr<CompressReactor> last = std::move(self_);
  last.reset();  // may delete this: nothing below may touch it
  storage::ReleaseFreeMemory();
}

}  // namespace bonsai::api
