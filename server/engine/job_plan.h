// From a request to a plan: the spec is validated as soon as it arrives
// (before any model byte), then matched against the model's tensors to
// decide which method touches which tensor at which sparsity.
#ifndef BONSAI_SERVER_ENGINE_JOB_PLAN_H_
#define BONSAI_SERVER_ENGINE_JOB_PLAN_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bonsai/v1/compressor.pb.h"
#include "re2/re2.h"
#include "server/formats/model.h"
#include "server/methods/method.h"

namespace bonsai::engine {

// A method applied to a set of tensors: the job's own method, one recipe
// rule, or a tensor with a sparsity override. A global scope spans the
// group's tensors.
struct RuleSpec {
  std::string name;                       // "" for the job's own method
  std::unique_ptr<RE2> pattern;           // null for the job's own method
  methods::MethodConfig config;
  bool keep_dense = false;                // a rule with method "none"
};

struct ValidatedSpec {
  v1::CompressionSpec proto;
  std::vector<std::unique_ptr<RE2>> include, exclude;
  RuleSpec job_method;
  std::vector<RuleSpec> rules;  // empty: every selected tensor gets job_method
};

// Checks everything that can be checked without the model: method names and
// parameters, sparsities, regular expressions (RE2: linear time, so a hostile
// pattern cannot hang a worker).
absl::StatusOr<ValidatedSpec> ValidateSpec(const v1::CompressionSpec& spec);

// Tensor selection shared by Compress and Inspect.
absl::StatusOr<std::vector<std::unique_ptr<RE2>>> CompilePatterns(
    const google::protobuf::RepeatedPtrField<std::string>& patterns, absl::string_view field);
bool IsSelected(const formats::TensorInfo& info,
                const std::vector<std::unique_ptr<RE2>>& include,
                const std::vector<std::unique_ptr<RE2>>& exclude, bool include_only);

struct MethodGroup {
  std::string rule_name;
  // The recipe rule's index, -1 for the job's own method: how jobs over
  // different shards of one model name the same global group.
  int rule_index = -1;
  methods::MethodConfig config;
  std::unique_ptr<methods::Method> method;
  std::vector<size_t> tensors;  // model order
};

struct CompressionPlan {
  std::vector<MethodGroup> groups;
  // Per model tensor: index into groups, or -1 when left alone.
  std::vector<int> group_of_tensor;
  std::vector<double> sparsity_of_tensor;
  // For the report: heads left out of structured pruning, rules that matched
  // nothing.
  std::vector<std::string> notes;
};

// INVALID_ARGUMENT when the spec selects no tensor of the model, or when it
// has rules and none of them matches a selected tensor: a job that would
// return its input unchanged is a mistake in the selection, and the message
// names it. Structured pruning leaves out the model's output heads
// (TensorInfo::output_head) unless an include pattern or an override names
// them, and says so in `notes`.
absl::StatusOr<CompressionPlan> PlanCompression(
    const ValidatedSpec& spec, const std::vector<formats::TensorInfo>& tensors);

}  // namespace bonsai::engine

#endif  // BONSAI_SERVER_ENGINE_JOB_PLAN_H_
