// The seam between file formats and everything above them. A format knows
// bytes and tensors, never methods: it lists the model's tensors, hands out
// one tensor at a time as float32, takes changed values back in the tensor's
// own dtype, and writes the model out with everything else unchanged.
#ifndef BONSAI_SERVER_FORMATS_MODEL_H_
#define BONSAI_SERVER_FORMATS_MODEL_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/tensor/dtype.h"
#include "server/tensor/float_tensor.h"

namespace bonsai::formats {

class EditableGraph;  // formats/editable_graph.h
class InputFile;
class OutputSink;

enum class Format { kOnnx, kSafetensors };
std::string_view FormatName(Format format);  // "onnx", "safetensors"

// How a weight's axes map to its operator, so that methods know what an
// output channel is and along which axis dot products accumulate.
//   safetensors (PyTorch layout [out, in, ...]):  output 0, reduction 1
//   ONNX Gemm B / MatMul B ([in, out]):           output 1, reduction 0
//   ONNX Gemm B with transB=1 ([out, in]):        output 0, reduction 1
//   ONNX Conv W ([out, in/group, kh, kw]):        output 0, reduction 1
//   ONNX ConvTranspose W ([in, out/group, ...]):  output 1, reduction 0
struct WeightLayout {
  int output_axis = 0;
  int reduction_axis = 1;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  tensor::DType dtype = tensor::DType::kOther;
  uint64_t params = 0;
  // What uses it, e.g. "Gemm.B", "MatMul.B", "Conv.W", "Gemm.C" (bias); empty
  // when unknown (safetensors).
  std::string role;
  // Pruned when the request does not say otherwise: the weight inputs of
  // Conv/ConvTranspose/Gemm/MatMul in ONNX; floating tensors of rank >= 2 that
  // are not embeddings in safetensors.
  bool selected_by_default = false;
  // Its output channels are the model's outputs (classes, vocabulary): an
  // ONNX weight whose channels reach a graph output with no other weight
  // layer between, or a safetensors tensor named as a head. Removing one of
  // its channels removes an output, so structured pruning leaves it whole
  // unless an include pattern names it.
  bool output_head = false;
  std::optional<WeightLayout> layout;
  std::string file;  // the job's file that holds it
};

// How a tensor should be stored when the request asks for packed output.
// The method that produced the values says which encoding fits them.
enum class Packing { kDense, kSparseBitmask, kNM, kBinary, kTernary, kQuantized };

// kQuantized: every weight is scale * (q - zero) in float32, with an integer
// code q in [0, 2^bits - 1] and one (scale, zero) per output channel and
// group of `group_columns` consecutive reduction columns (the matrix view of
// methods/weight_matrix.h: columns in PyTorch's unfold order); the last group
// of a row is shorter when the groups do not tile it. The codes are not kept:
// a format recovers them from the float values and checks that they give the
// values back exactly (formats/quant_codes.h).
struct QuantGrids {
  int bits = 0;
  bool symmetric = false;
  int64_t group_size = 0;     // as requested: 0 means one group per output channel
  int64_t group_columns = 0;  // as applied
  int64_t rows = 0, groups = 0;
  std::vector<float> scales, zeros;  // rows x groups, row-major
};

struct PackingHint {
  Packing packing = Packing::kDense;
  int n = 0, m = 0;                  // kNM: groups of m along the reduction axis
  std::vector<float> scales;         // kBinary / kTernary: one per output channel or one per tensor
  std::shared_ptr<const QuantGrids> quant;  // kQuantized
};

// How packed output stores quantized safetensors weights (ONNX has one
// layout per bit width, see formats/onnx_quantized.h).
enum class QuantLayout { kCompressedTensors, kGptq };

struct SerializeOptions {
  bool packed = false;
  QuantLayout quant_layout = QuantLayout::kCompressedTensors;
};

// Per-tensor outcome of serialization, for the report.
struct StoredSize {
  uint64_t dense_bytes = 0;
  uint64_t stored_bytes = 0;
};

class Model {
 public:
  virtual ~Model() = default;

  virtual Format format() const = 0;
  virtual const std::vector<TensorInfo>& tensors() const = 0;

  // The tensor's values as float32 into `out`, a copy the caller may
  // change. Its storage is reused: a job that reads tensor after tensor into
  // one FloatTensor allocates (and the kernel zeroes pages) once, not per
  // tensor and pass.
  virtual absl::Status ReadInto(size_t index, tensor::FloatTensor& out) const = 0;
  // The same into a fresh tensor.
  absl::StatusOr<tensor::FloatTensor> Read(size_t index) const {
    tensor::FloatTensor out;
    if (auto status = ReadInto(index, out); !status.ok()) return status;
    return out;
  }
  // How `after` differs from the tensor as stored now, before Write: what
  // the report says of a change, without the caller keeping a copy of the
  // original. The default reads the tensor; formats that can decode in
  // pieces do it without a copy.
  virtual absl::StatusOr<tensor::ChangeStats> CompareWithStored(
      size_t index, absl::Span<const float> after) const {
    auto before = Read(index);
    if (!before.ok()) return before.status();
    if (before->size() != after.size()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor \"", tensors()[index].name, "\" has ",
                                                     before->size(), " values, not ", after.size()));
    }
    tensor::ChangeAccumulator change;
    change.Add(before->span(), after);
    return change.stats();
  }
  // Replaces the tensor's values (same shape), stored in its own dtype.
  // Once output has started, tensors are written in increasing index order,
  // and a format may send each one out as it comes.
  virtual absl::Status Write(size_t index, const tensor::FloatTensor& values,
                             const PackingHint& packing = {}) = 0;

  // Output: StartOutput once (before or after the writes), FinishOutput once
  // after the last write. The model's files go to `sink` one after another,
  // each as soon as its bytes are final; after FinishOutput the model can no
  // longer be read.
  virtual absl::Status StartOutput(const SerializeOptions& options, OutputSink& sink) = 0;
  virtual absl::Status FinishOutput() = 0;

  // After FinishOutput: bytes per tensor as written (for packed output).
  virtual std::vector<StoredSize> stored_sizes() const { return {}; }

  // The bytes of the largest tensor as stored: what one tensor's working
  // buffers scale with, for the job's memory estimate.
  virtual uint64_t largest_tensor_bytes() const = 0;
  // Memory the model holds whatever the tensors (an ONNX graph parsed whole).
  virtual uint64_t resident_bytes() const { return 0; }
  // ONNX: the opset of the default domain the model imports (what operators
  // packed output may add); 0 for other formats.
  virtual int64_t onnx_opset() const { return 0; }
  // The graph, for surgery that changes which tensors exist or their shapes
  // (physical channel pruning); null for formats without one (safetensors).
  virtual EditableGraph* editable_graph() { return nullptr; }

  // For tests and benchmarks: the whole output of a single-file model as
  // one string (formats/in_memory.cc).
  absl::StatusOr<std::string> Serialize(const SerializeOptions& options);
};

// The checks every Model makes before Read/Write: not yet serialized, index
// in range. Formats add their own message for a non-floating dtype.
absl::Status CheckTensorAccess(bool serialized, size_t index, size_t tensor_count);

// Detects a single file's format from its content (never its name) and opens
// it. Errors are InvalidArgument with a message that says what was wrong and
// what to do (e.g. "this is a PyTorch checkpoint; save it with safetensors").
absl::StatusOr<std::unique_ptr<Model>> OpenModelFile(InputFile input);

// For tests and benchmarks: a model from bytes in memory (formats/in_memory.cc).
absl::StatusOr<std::unique_ptr<Model>> ParseModel(std::string bytes);

}  // namespace bonsai::formats

#endif  // BONSAI_SERVER_FORMATS_MODEL_H_
