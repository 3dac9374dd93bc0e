#include "server/engine/compression_job.h"

#include <chrono>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"

#include "absl/strings/str_cat.h"
#include "server/engine/calibration.h"
#include "server/engine/error_reason.h"
#include "server/engine/packed_quantization.h"
#include "server/formats/model_set.h"
#include "server/engine/physical_pruning.h"
#include "server/formats/model.h"
#include "server/observability/metrics.h"

namespace bonsai::engine {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Counts work in weights visited, so the fraction moves evenly whatever the
// mix of passes and tensor sizes.
class WorkMeter {
 public:
  WorkMeter(const ProgressSink& sink, uint64_t total) : sink_(sink), total_(total) {}
  void Advance(uint64_t weights, std::string_view detail) {
    done_ += weights;
    sink_(v1::STAGE_COMPRESSING, total_ ? double(done_) / total_ : 1.0, detail);
  }
  void Within(uint64_t weights, double fraction, std::string_view detail) {
    sink_(v1::STAGE_COMPRESSING,
          total_ ? (done_ + fraction * double(weights)) / total_ : 1.0, detail);
  }

 private:
  const ProgressSink& sink_;
  uint64_t total_;
  uint64_t done_ = 0;
};

void FillTensorReport(const formats::TensorInfo& info, const tensor::ChangeStats& change,
                      const MethodGroup& group, const methods::MethodOutcome& outcome,
                      v1::TensorReport* report) {
  report->set_name(info.name);
  for (int64_t dim : info.shape) report->add_shape(dim);
  report->set_dtype(std::string(tensor::DTypeName(info.dtype)));
  report->set_params(info.params);
  report->set_nonzero_before(change.nonzero_before);
  report->set_nonzero_after(change.nonzero_after);
  report->set_sparsity(info.params ? 1.0 - double(change.nonzero_after) / info.params : 0.0);
  report->set_relative_error(change.relative_error());
  report->set_method(group.config.method);
  report->set_rule(group.rule_name);
  report->set_note(outcome.note);
  if (outcome.reconstruction_error >= 0) {
    report->set_reconstruction_error(outcome.reconstruction_error);
  }
  report->set_dense_bytes(info.params * tensor::DTypeSize(info.dtype));
}

// A core for one tensor's computation, taken after its bytes have arrived
// (reads wait for the upload without holding one).
absl::StatusOr<std::unique_ptr<CoreLease>> TakeCore(CoreGate* cores,
                                                    const CancellationToken& cancel) {
  if (cores == nullptr) return std::unique_ptr<CoreLease>();
  return cores->AcquireCore([&cancel] { return cancel.cancelled(); });
}

absl::Status RunObservationPasses(formats::Model& model, CompressionPlan& plan,
                                  CalibrationSet& calibration, WorkMeter& meter,
                                  CoreGate* cores, const CancellationToken& cancel) {
  const auto& tensors = model.tensors();
  tensor::FloatTensor values;  // one buffer for every tensor and pass
  for (MethodGroup& group : plan.groups) {
    for (int pass = 0; pass < group.method->observation_passes(); ++pass) {
      if (!group.method->NeedsPass(pass)) {
        for (size_t index : group.tensors) meter.Advance(tensors[index].params, "");
        continue;
      }
      for (size_t index : group.tensors) {
        if (auto s = cancel.CheckNotCancelled(); !s.ok()) return s;
        if (auto s = model.ReadInto(index, values); !s.ok()) return s;
        auto core = TakeCore(cores, cancel);
        if (!core.ok()) return core.status();
        // Observation reads the statistics; only Apply may consume them.
        methods::WeightTensor weight{
            &tensors[index], &values, plan.sparsity_of_tensor[index],
            const_cast<methods::CalibrationStats*>(calibration.Find(tensors[index].name))};
        group.method->Observe(pass, weight);
        meter.Advance(tensors[index].params, tensors[index].name);
      }
      group.method->EndPass(pass);
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyMethods(formats::Model& model, CompressionPlan& plan,
                          CalibrationSet& calibration, WorkMeter& meter, CoreGate* cores,
                          const CancellationToken& cancel, v1::CompressionReport& report) {
  const auto& tensors = model.tensors();
  tensor::FloatTensor values;  // one buffer for every tensor
  for (size_t index = 0; index < tensors.size(); ++index) {
    const int group_index = plan.group_of_tensor[index];
    if (group_index < 0) continue;
    if (auto s = cancel.CheckNotCancelled(); !s.ok()) return s;
    MethodGroup& group = plan.groups[group_index];
    const formats::TensorInfo& info = tensors[index];

    if (auto s = model.ReadInto(index, values); !s.ok()) return s;
    auto core = TakeCore(cores, cancel);
    if (!core.ok()) return core.status();
    std::unique_ptr<methods::CalibrationStats> stats = calibration.TakeForApply(info.name);
    methods::WeightTensor weight{&info, &values, plan.sparsity_of_tensor[index], stats.get()};
    const methods::ProgressTick tick = [&](double fraction) {
      meter.Within(info.params, fraction, info.name);
      return !cancel.cancelled();
    };
    auto outcome = group.method->Apply(weight, tick);
    if (!outcome.ok()) {
      return absl::Status(outcome.status().code(),
                          absl::StrCat(info.name, ": ", outcome.status().message()));
    }
    auto change = model.CompareWithStored(index, values.span());
    if (!change.ok()) return change.status();
    if (auto s = model.Write(index, values, outcome->packing); !s.ok()) return s;
    FillTensorReport(info, *change, group, *outcome, report.add_tensors());
    report.mutable_tensors()->rbegin()->set_file(info.file);
    meter.Advance(info.params, info.name);
  }
  return absl::OkStatus();
}

// Calibration keyed by a name the model lacks is almost always a naming
// mismatch (e.g. ONNX initializer names vs. the torch module's); say so
// rather than silently pruning without it.
void WarnAboutUnusedCalibration(const formats::Model& model, const CalibrationSet& calibration,
                                v1::CompressionReport& report) {
  if (calibration.size() == 0) return;
  absl::flat_hash_set<std::string> names;
  for (const auto& info : model.tensors()) names.insert(info.name);
  int unused = 0;
  std::string examples;
  for (const std::string& name : calibration.WeightNames()) {
    if (names.contains(name)) continue;
    if (++unused <= 3) absl::StrAppend(&examples, unused > 1 ? ", " : "", "'", name, "'");
  }
  if (unused > 0) {
    report.add_warnings(absl::StrCat(
        unused, " calibration entr", unused == 1 ? "y names" : "ies name",
        " no tensor of the model (", examples, unused > 3 ? ", ..." : "",
        "); key calibration by the model's tensor names (see Inspect)"));
  }
}

// Bytes each compressed tensor takes as written: less than dense when the
// output is packed and packing paid off.
void FillStoredSizes(const formats::Model& model, v1::CompressionReport& report) {
  const std::vector<formats::StoredSize> stored = model.stored_sizes();
  absl::flat_hash_map<std::string, size_t> index_of;
  for (size_t i = 0; i < model.tensors().size(); ++i) index_of[model.tensors()[i].name] = i;
  for (v1::TensorReport& t : *report.mutable_tensors()) {
    uint64_t bytes = t.dense_bytes();
    auto it = index_of.find(t.name());
    if (it != index_of.end() && it->second < stored.size() && stored[it->second].stored_bytes) {
      bytes = stored[it->second].stored_bytes;
    }
    t.set_packed_bytes(bytes);
    t.set_bits_per_weight(t.params() ? 8.0 * double(bytes) / double(t.params()) : 0.0);
  }
}

uint64_t TotalParams(const formats::Model& model) {
  uint64_t params = 0;
  for (const auto& info : model.tensors()) params += info.params;
  return params;
}

void FillTotals(const formats::Model& model, uint64_t params_in, uint64_t bytes_in,
                uint64_t bytes_out, const ZstdSize& zstd, v1::CompressionReport& report) {
  v1::Totals* totals = report.mutable_totals();
  uint64_t prunable = 0, nonzero = 0, dense = 0, packed = 0;
  for (const auto& t : report.tensors()) {
    prunable += t.params();
    nonzero += t.nonzero_after();
    dense += t.dense_bytes();
    packed += t.packed_bytes();
  }
  totals->set_packed_bytes(packed);
  totals->set_bits_per_weight(prunable ? 8.0 * double(packed) / double(prunable) : 0.0);
  totals->set_params(params_in);
  totals->set_params_after(TotalParams(model));  // smaller after physical pruning
  totals->set_prunable_params(prunable);
  totals->set_nonzero_after(nonzero);
  totals->set_sparsity(prunable ? 1.0 - double(nonzero) / prunable : 0.0);
  totals->set_model_bytes_in(bytes_in);
  totals->set_model_bytes_out(bytes_out);
  totals->set_model_bytes_out_zstd(zstd.bytes);
  totals->set_model_bytes_out_zstd_estimated(zstd.estimated);
  totals->set_dense_bytes(dense);
}

}  // namespace

uint64_t EstimateJobMemory(const formats::Model& model, uint64_t calibration_bytes) {
  uint64_t largest_params = 0;
  for (const auto& info : model.tensors()) largest_params = std::max(largest_params, info.params);
  // The float copy and the stored bytes of one tensor, the same again for a
  // method's per-tensor buffers (masks, scores, a sample of magnitudes), the
  // calibration statistics (parsed, held whole; a method may take one more
  // d x d matrix beside its Gram), and a fixed allowance for the rest (BLAS
  // workspace, zstd and copy buffers).
  constexpr uint64_t kFixed = 48ull << 20;
  const uint64_t tensor_bytes = largest_params * sizeof(float) + model.largest_tensor_bytes();
  return model.resident_bytes() + 2 * tensor_bytes + calibration_bytes + kFixed;
}

absl::StatusOr<v1::CompressionReport> RunCompressionJob(CompressionInput input,
                                                        const ProgressSink& progress,
                                                        const CancellationToken& cancel) {
  const ValidatedSpec& spec = *input.spec;
  v1::CompressionReport report;
  v1::Timings* timings = report.mutable_timings();
  timings->set_queue_seconds(input.queue_seconds);
  uint64_t bytes_in = 0;
  for (const auto& file : input.files) bytes_in += file.size();

  auto stage_start = Clock::now();
  progress(v1::STAGE_PARSING, 0.0, "");
  auto model = formats::OpenModelFiles(std::move(input.files));
  if (!model.ok()) return TagInvalidArgument(model.status(), ErrorReason::kInvalidModel);
  report.set_format(std::string(formats::FormatName((*model)->format())));
  report.set_method(spec.proto.method());
  const uint64_t params_in = TotalParams(**model);
  auto plan = PlanCompression(spec, (*model)->tensors());
  if (!plan.ok()) return TagInvalidArgument(plan.status(), ErrorReason::kInvalidSpec);
  for (const std::string& note : plan->notes) report.add_warnings(note);
  if (auto s = CheckPackedQuantization(spec, *plan, **model); !s.ok()) {
    return TagInvalidArgument(s, ErrorReason::kInvalidSpec);
  }
  absl::StatusOr<CalibrationSet> calibration = CalibrationSet();
  if (input.calibration) {
    auto bytes = input.calibration->ReadAll();
    if (!bytes.ok()) return bytes.status();
    calibration = ParseCalibration(*std::move(bytes));
  }
  if (!calibration.ok()) {
    return TagInvalidArgument(
        absl::Status(calibration.status().code(),
                     absl::StrCat("calibration data: ", calibration.status().message())),
        ErrorReason::kInvalidModel);
  }
  std::unique_ptr<storage::Reservation> memory;
  if (input.memory != nullptr) {
    const uint64_t need = EstimateJobMemory(**model, calibration->bytes());
    auto reserved = input.memory->TryReserve(need);
    if (!reserved.ok()) return WithReason(reserved.status(), ErrorReason::kModelTooLarge);
    if (*reserved == nullptr) {
      progress(v1::STAGE_QUEUED, 0.0, "waiting for memory");
      reserved = input.memory->Reserve(need, [&cancel] { return cancel.cancelled(); });
      if (!reserved.ok()) return reserved.status();
    }
    memory = *std::move(reserved);
  }
  WarnAboutUnusedCalibration(**model, *calibration, report);
  plan = ApplyPhysicalPruning(spec, **model, std::move(*plan), report);
  if (!plan.ok()) return plan.status();
  timings->set_parse_seconds(SecondsSince(stage_start));
  progress(v1::STAGE_PARSING, 1.0, "");
  observability::RecordStageSeconds(observability::JobStage::kParse, timings->parse_seconds());

  stage_start = Clock::now();
  formats::SerializeOptions options;
  options.packed = spec.proto.output() == v1::OUTPUT_MODE_PACKED;
  options.quant_layout = QuantLayoutOf(spec.proto);
  if (auto s = (*model)->StartOutput(options, *input.output); !s.ok()) return s;
  uint64_t work = 0;
  for (const MethodGroup& group : plan->groups) {
    for (size_t index : group.tensors) {
      work += (*model)->tensors()[index].params * (1 + group.method->observation_passes());
    }
  }
  WorkMeter meter(progress, work);
  progress(v1::STAGE_COMPRESSING, 0.0, "");
  if (input.exchange != nullptr) {
    if (auto s = SettleGlobalCutsWithClient(**model, *plan, *input.exchange, input.cores, cancel);
        !s.ok()) {
      return s;
    }
  }
  if (auto s = RunObservationPasses(**model, *plan, *calibration, meter, input.cores, cancel);
      !s.ok()) {
    return s;
  }
  if (auto s = ApplyMethods(**model, *plan, *calibration, meter, input.cores, cancel, report);
      !s.ok()) {
    return s;
  }
  timings->set_compress_seconds(SecondsSince(stage_start));
  observability::RecordStageSeconds(observability::JobStage::kCompress,
                                    timings->compress_seconds());

  stage_start = Clock::now();
  progress(v1::STAGE_SERIALIZING, 0.0, "");
  if (auto s = (*model)->FinishOutput(); !s.ok()) return s;
  auto zstd_bytes = input.output->ZstdBytes();
  if (!zstd_bytes.ok()) return zstd_bytes.status();
  for (v1::FileReport& file : input.output->file_reports()) *report.add_files() = std::move(file);
  FillStoredSizes(**model, report);
  FillTotals(**model, params_in, bytes_in, input.output->bytes_out(), *zstd_bytes, report);
  timings->set_serialize_seconds(SecondsSince(stage_start));
  progress(v1::STAGE_SERIALIZING, 1.0, "");
  observability::RecordStageSeconds(observability::JobStage::kSerialize,
                                    timings->serialize_seconds());
  return report;
}

}  // namespace bonsai::engine
