// Hostile job specs and recipes: validation (methods, parameters, RE2
// patterns) and planning against a fixed model's tensor list. Inputs are
// serialized CompressionSpecs, mutated by field (proto_mutator.h).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bonsai/v1/compressor.pb.h"
#include "google/protobuf/stubs/logging.h"
#include "server/engine/job_plan.h"
#include "tests/fuzz/proto_mutator.h"

namespace {

using bonsai::formats::TensorInfo;
using bonsai::tensor::DType;

// Weights, a bias, an embedding, a non-floating and an empty tensor.
const std::vector<TensorInfo>& Tensors() {
  static const auto* tensors = new std::vector<TensorInfo>{
      {"layers.0.attn.q_proj.weight", {8, 8}, DType::kF32, 64, "", true, false, {{0, 1}}},
      {"layers.0.mlp.fc1.weight", {16, 8}, DType::kBF16, 128, "", true, false, {{0, 1}}},
      {"conv.weight", {4, 2, 3, 3}, DType::kF16, 72, "Conv.W", true, false, {{0, 1}}},
      {"conv.bias", {4}, DType::kF32, 4, "Conv.B", false, false, std::nullopt},
      {"embed_tokens.weight", {10, 8}, DType::kF64, 80, "", false, false, {{0, 1}}},
      {"position_ids", {1, 8}, DType::kOther, 8, "", false, false, std::nullopt},
      {"empty.weight", {0, 8}, DType::kF32, 0, "", false, false, {{0, 1}}},
  };
  return *tensors;
}

void Extra(bonsai::v1::CompressionSpec& spec, bonsai::fuzz::ProtoMutator& m) {
  // A rule or an override naming one of the model's tensors.
  const std::string& name = Tensors()[m.Below(Tensors().size())].name;
  if (m.OneIn(2)) {
    bonsai::v1::Rule* rule = spec.add_rules();
    rule->set_tensor_regex(m.OneIn(2) ? name : name.substr(0, m.Below(name.size() + 1)));
    rule->set_method(m.OneIn(2) ? spec.method() : "none");
    rule->set_sparsity(m.Real());
    // Rules replace the job's method; keep the odd spec with both, which
    // validation must refuse, but let most reach planning.
    if (!m.OneIn(4)) {
      spec.clear_method();
      spec.clear_sparsity();
      spec.clear_options();
    }
  } else {
    (*spec.mutable_sparsity_overrides())[name] = m.Real();
  }
}

}  // namespace

// Byte-mutated inputs would have protobuf log every invalid string it meets.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size,
                                          unsigned int seed) {
  static const std::vector<std::string> kDictionary = {
      "magnitude", "nm", "structured", "wanda", "sparsegpt", "binarize", "ternarize", "none",
      "weight", "^layers\\.0\\.", "attn\\.(q|k|v|o)_proj", "mlp\\.", "(a*)*b", "[", "\\p{L}"};
  return bonsai::fuzz::MutateProtoInput<bonsai::v1::CompressionSpec>(data, size, max_size, seed,
                                                                     kDictionary, Extra);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bonsai::v1::CompressionSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  auto validated = bonsai::engine::ValidateSpec(spec);
  if (!validated.ok()) return 0;
  auto plan = bonsai::engine::PlanCompression(*validated, Tensors());
  if (!plan.ok()) return 0;
  // What the job relies on: one entry per tensor, each naming a real group
  // with a method that lists the tensor, and only floating tensors touched.
  if (plan->group_of_tensor.size() != Tensors().size()) __builtin_trap();
  for (size_t i = 0; i < Tensors().size(); ++i) {
    const int g = plan->group_of_tensor[i];
    if (g == -1) continue;
    if (g < 0 || g >= static_cast<int>(plan->groups.size())) __builtin_trap();
    const auto& group = plan->groups[g];
    if (group.method == nullptr || Tensors()[i].dtype == DType::kOther) __builtin_trap();
    if (std::find(group.tensors.begin(), group.tensors.end(), i) == group.tensors.end()) {
      __builtin_trap();
    }
  }
  return 0;
}
