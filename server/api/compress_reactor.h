// The Compress stream: takes the spec, admits the job and starts it on the
// engine's worker pool at once, spools the upload's chunks as they arrive
// (the job reads them as they land), and streams progress, the output files
// (from the spool, as the job writes them) and last the report, one write
// in flight at a time.
//
// Lifetime: the reactor is shared by gRPC (until OnDone) and by its job on a
// worker (until the job returns), so neither can pull it from under the
// other. Start*/Finish are never called with mu_ held, because gRPC may run
// the next reaction inline on the calling thread.
#ifndef BONSAI_SERVER_API_COMPRESS_REACTOR_H_
#define BONSAI_SERVER_API_COMPRESS_REACTOR_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "bonsai/v1/compressor.grpc.pb.h"
#include "server/api/active_calls.h"
#include "server/api/admission.h"
#include "server/api/job_stage.h"
#include "server/api/service_context.h"
#include "server/api/upload_files.h"
#include "server/engine/cancellation.h"
#include "server/engine/compression_job.h"
#include "server/engine/job_output.h"
#include "server/engine/job_plan.h"

namespace bonsai::api {

class CompressReactor
    : public grpc::ServerBidiReactor<v1::CompressRequest, v1::CompressResponse>,
      public AbortableCall,
      public engine::GlobalCutExchange,
      public std::enable_shared_from_this<CompressReactor> {
 public:
  static CompressReactor* Start(const ServiceContext& context,
                                grpc::CallbackServerContext* call);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;
  void Abort(const absl::Status& status) override;
  // On the job's worker: sends a summary, waits for the client's decision.
  absl::StatusOr<v1::GlobalDecision> Exchange(v1::GlobalSummary summary) override;
  std::optional<observability::AdmittedStage> stage() const override { return stage_.stage(); }

 private:
  CompressReactor(const ServiceContext& context, grpc::CallbackServerContext* call);

  absl::Status HandleRequest();
  absl::Status HandleSpec(const v1::CompressionSpec& spec);
  absl::Status HandleDecision(const v1::GlobalDecision& decision);
  void EndUpload();
  void RunJob();  // on a worker
  void QueueProgress(v1::Stage stage, double fraction, std::string_view detail);
  void CompleteJob(absl::StatusOr<v1::CompressionReport> result);
  // The next output chunk into response_, if one is ready.
  bool NextOutputChunk() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishWith(const absl::Status& status);
  // Picks the next message (or the final status) and starts it, if nothing
  // is in flight. Call without mu_ held.
  void Pump();

  using Clock = std::chrono::steady_clock;

  ServiceContext context_;
  grpc::CallbackServerContext* call_;
  std::shared_ptr<CompressReactor> self_;  // gRPC's reference, dropped in OnDone
  engine::CancellationToken cancel_;

  // Reading side: touched only by OnReadDone, which gRPC serialises.
  v1::CompressRequest request_;
  enum class Phase { kAwaitSpec, kReceiving, kJob, kEnded } phase_ = Phase::kAwaitSpec;
  std::shared_ptr<engine::ValidatedSpec> spec_;
  UploadFiles uploads_;
  // Set by the spec (reading side), released by the job when it completes;
  // never touched by both at once (the job starts after the spec).
  std::unique_ptr<AdmittedJob> slot_;
  JobStage stage_;
  StageCountingCores cores_;  // the scheduler's cores, counted in stage_
  Clock::time_point receive_start_;
  Clock::time_point last_receive_progress_;
  std::atomic<double> receive_seconds_{0};
  std::unique_ptr<engine::JobOutput> output_;  // created at the spec, before the job

  // Writing side.
  absl::Mutex mu_;
  v1::CompressResponse response_ ABSL_GUARDED_BY(mu_);
  // The last chunk message sent, kept for the next one: its 1 MiB buffer is
  // reused as is, not allocated and zero-filled again for every chunk.
  std::unique_ptr<v1::FileChunk> spare_chunk_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<v1::Progress> pending_progress_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::CompressionReport> pending_report_ ABSL_GUARDED_BY(mu_);
  // exchange_global_cuts: summaries to send, decisions received (two of
  // each per job at most), and the job's wake-up when one arrives.
  std::deque<v1::GlobalSummary> pending_summaries_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::GlobalDecision> decisions_ ABSL_GUARDED_BY(mu_);
  int decisions_received_ = 0;  // reading side
  std::atomic<bool> half_closed_{false};  // no decision can come any more
  absl::CondVar decision_arrived_;
  size_t sending_file_ ABSL_GUARDED_BY(mu_) = 0;       // k-th produced output file
  uint64_t sending_offset_ ABSL_GUARDED_BY(mu_) = 0;   // in it
  bool first_chunk_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool job_succeeded_ ABSL_GUARDED_BY(mu_) = false;
  // The client half-closed and every file had exactly its declared bytes.
  // The report waits for it: a job may finish as soon as the bytes it reads
  // are in, before a stray byte past a declared size arrives, and an upload
  // that breaks its declaration must never end with a report and OK.
  bool upload_verified_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<absl::Status> final_status_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> abort_status_ ABSL_GUARDED_BY(mu_);
  std::string method_label_ ABSL_GUARDED_BY(mu_) = "unknown";
  std::string format_label_ ABSL_GUARDED_BY(mu_) = "unknown";
  absl::Status sent_status_ ABSL_GUARDED_BY(mu_);
  Clock::time_point send_start_ ABSL_GUARDED_BY(mu_);

  // For the one log line per call (OnDone).
  const uint64_t job_id_;
  const std::string peer_;
  const Clock::time_point call_start_ = Clock::now();
  uint64_t sent_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace bonsai::api

#endif  // BONSAI_SERVER_API_COMPRESS_REACTOR_H_
