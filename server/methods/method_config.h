// What a request asks of one method, free of the API's protobuf types, and
// the catalogue of methods that GetCapabilities publishes.
#ifndef BONSAI_SERVER_METHODS_METHOD_CONFIG_H_
#define BONSAI_SERVER_METHODS_METHOD_CONFIG_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace bonsai::methods {

enum class Scope { kLayer, kGlobal };
enum class NormKind { kL1, kL2 };
enum class StructuredMode { kMask, kPhysical };

struct MethodConfig {
  std::string method;  // "magnitude", "nm", ...
  double sparsity = 0.0;
  Scope scope = Scope::kLayer;
  int n = 0, m = 0;
  NormKind norm = NormKind::kL2;
  StructuredMode structured_mode = StructuredMode::kMask;
  int block_size = 128;
  double dampening = 0.01;
  bool per_channel = false;
  // Weight quantization (rtn, gptq; sparsegpt's joint mode when bits > 0).
  int bits = 0;  // 0: the method's default (4 for rtn and gptq; none for sparsegpt)
  int64_t group_size = 128;  // weights per grid along the reduction axis; 0: a whole row
  bool symmetric = false;
  bool act_order = false;  // gptq: columns in order of decreasing Hessian diagonal
};

struct ParameterDescription {
  std::string name, type, default_value, description;
};

struct MethodDescription {
  std::string name;
  std::string description;
  std::vector<ParameterDescription> parameters;
  bool needs_calibration = false;
  std::vector<std::string> formats;
};

// Every method this build offers, in a stable order.
const std::vector<MethodDescription>& DescribeMethods();
// Whether this build offers a method of that name.
bool IsMethod(std::string_view name);

// What the engine asks of a method's kind before it builds one, answered by
// the method's own entry in the registry (false / 0 for an unknown method),
// so that adding a method means one entry there and no name compared
// anywhere else.
// Prunes whole output channels: the model's output heads are left whole
// unless named (safe defaults).
bool PrunesWholeChannels(const MethodConfig& config);
// Needs a sparsity target to change anything (a rule without one would not).
bool NeedsSparsity(const MethodConfig& config);
// Bits per weight of its quantized grid; 0 when it does not quantize.
int QuantizedBits(const MethodConfig& config);

}  // namespace bonsai::methods

#endif  // BONSAI_SERVER_METHODS_METHOD_CONFIG_H_
