#include "server/formats/onnx_quantized.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "server/formats/onnx_graph_index.h"
#include "server/formats/quant_codes.h"

namespace bonsai::formats {
namespace {

constexpr int64_t kPerChannelOpset = 13;  // DequantizeLinear's axis
constexpr int64_t kBlockedOpset = 21;     // DequantizeLinear's block_size
constexpr char kMicrosoftDomain[] = "com.microsoft";

absl::Status Refuse(const TensorInfo& info, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("packed ONNX output of quantized tensor \"", info.name, "\": ", why));
}

onnx::TensorProto NewTensor(const std::string& name, onnx::TensorProto::DataType type,
                            std::vector<int64_t> dims, std::string bytes) {
  onnx::TensorProto tensor;
  tensor.set_name(name);
  tensor.set_data_type(type);
  for (int64_t dim : dims) tensor.add_dims(dim);
  tensor.set_raw_data(std::move(bytes));
  return tensor;
}

std::string FloatBytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(bytes.data(), values.data(), bytes.size());  // little-endian, as raw_data is
  return bytes;
}

void SetInt(onnx::NodeProto& node, const char* name, int64_t value) {
  onnx::AttributeProto* attribute = node.add_attribute();
  attribute->set_name(name);
  attribute->set_type(onnx::AttributeProto::INT);
  attribute->set_i(value);
}

bool IsPowerOfTwo(int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

absl::Status CheckDequantizeOpset(const TensorInfo& info, bool blocked, int64_t opset) {
  const int64_t needed = blocked ? kBlockedOpset : kPerChannelOpset;
  if (opset >= needed) return absl::OkStatus();
  return Refuse(info, absl::StrCat(
      "the model's opset is ", opset, ", and DequantizeLinear ",
      blocked ? "blocked along the input axis" : "per channel", " needs opset ", needed,
      "; re-export the model with opset ", needed,
      blocked ? ", or use group_size 0 (per channel)" : "", ", or ask for output dense"));
}

// 8 bits: codes in the weight's own layout, grids per channel or per block.
absl::StatusOr<OnnxQuantizedForm> DequantizeForm(const TensorInfo& info, const QuantizedMatrix& m,
                                                 int64_t opset) {
  const QuantGrids& grids = *m.grids;
  const WeightLayout layout = *info.layout;
  const bool blocked = grids.groups > 1;
  OnnxQuantizedForm form;
  form.opset_needed = blocked ? kBlockedOpset : kPerChannelOpset;
  if (auto s = CheckDequantizeOpset(info, blocked, opset); !s.ok()) return s;
  // Codes in storage order: [out, in, ...] is the matrix itself; [in, out] its transpose.
  const bool in_out = layout.output_axis == 1;
  std::string codes(m.codes.size(), '\0');
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t c = 0; c < m.cols; ++c) {
      codes[in_out ? c * m.rows + r : r * m.cols + c] = static_cast<char>(m.codes[r * m.cols + c]);
    }
  }
  std::vector<int64_t> scale_dims;
  std::vector<float> scales;
  std::string zeros;
  if (!blocked) {
    scale_dims = {m.rows};
    for (int64_t r = 0; r < m.rows; ++r) {
      scales.push_back(m.scale(r, 0));
      zeros.push_back(static_cast<char>(m.zero(r, 0)));
    }
  } else {
    // The scale has the weight's rank with the blocked (reduction) axis cut
    // to one entry per block.
    scale_dims = info.shape;
    scale_dims[layout.reduction_axis] = grids.groups;
    scales.resize(m.rows * grids.groups);
    zeros.resize(scales.size());
    for (int64_t r = 0; r < m.rows; ++r) {
      for (int64_t g = 0; g < grids.groups; ++g) {
        const int64_t at = in_out ? g * m.rows + r : r * grids.groups + g;
        scales[at] = m.scale(r, g);
        zeros[at] = static_cast<char>(m.zero(r, g));
      }
    }
  }
  const std::string q = info.name + "_quantized", s = info.name + "_scale",
                    z = info.name + "_zero_point";
  form.initializers.push_back(NewTensor(q, onnx::TensorProto::UINT8, info.shape, std::move(codes)));
  form.initializers.push_back(NewTensor(s, onnx::TensorProto::FLOAT, scale_dims, FloatBytes(scales)));
  form.initializers.push_back(NewTensor(z, onnx::TensorProto::UINT8, scale_dims, std::move(zeros)));
  onnx::NodeProto& node = form.dequantize;
  node.set_op_type("DequantizeLinear");
  node.set_name(info.name + "_dequantize");
  node.add_input(q);
  node.add_input(s);
  node.add_input(z);
  node.add_output(info.name);
  SetInt(node, "axis", blocked ? layout.reduction_axis : layout.output_axis);
  if (blocked) SetInt(node, "block_size", grids.group_columns);
  return form;
}

// 4 bits: onnxruntime's MatMulNBits blobs, one row per output column n.
OnnxQuantizedForm MatMulNBitsForm(const TensorInfo& info, const QuantizedMatrix& m) {
  const QuantGrids& grids = *m.grids;
  OnnxQuantizedForm form;
  form.matmul_nbits = true;
  form.k = m.cols;
  form.n = m.rows;
  // One block per group; a group that spans the whole input axis (group_size
  // 0 or >= K) is one block of the requested size, or of the power of two
  // >= max(K, 16) when per channel, padded with zero codes past K.
  form.block_size = grids.group_size;
  if (grids.group_size <= 0) {
    form.block_size = 16;
    while (form.block_size < m.cols) form.block_size *= 2;
  }
  const int64_t blocks = grids.groups, blob = form.block_size / 2;
  std::string b(m.rows * blocks * blob, '\0');
  std::vector<float> scales(m.rows * blocks);
  const int64_t zero_bytes = (blocks + 1) / 2;
  std::string zeros(m.rows * zero_bytes, '\0');
  for (int64_t n = 0; n < m.rows; ++n) {
    for (int64_t g = 0; g < blocks; ++g) {
      const uint8_t zero = m.zero(n, g);
      scales[n * blocks + g] = m.scale(n, g);
      zeros[n * zero_bytes + g / 2] |= static_cast<char>(zero << (4 * (g % 2)));
      for (int64_t j = 0; j < form.block_size; ++j) {
        const int64_t k = g * form.block_size + j;
        // Past K the last block is padded with its zero point: weights of 0.
        const uint8_t code = k < m.cols ? m.codes[n * m.cols + k] : zero;
        b[(n * blocks + g) * blob + j / 2] |= static_cast<char>(code << (4 * (j % 2)));
      }
    }
  }
  form.initializers.push_back(NewTensor(info.name + "_Q4", onnx::TensorProto::UINT8,
                                        {m.rows, blocks, blob}, std::move(b)));
  form.initializers.push_back(NewTensor(info.name + "_scales", onnx::TensorProto::FLOAT,
                                        {m.rows * blocks}, FloatBytes(scales)));
  if (!grids.symmetric) {
    form.initializers.push_back(NewTensor(info.name + "_zero_points", onnx::TensorProto::UINT8,
                                          {m.rows * zero_bytes}, std::move(zeros)));
  }
  return form;
}

}  // namespace

int64_t DefaultOpset(const onnx::ModelProto& model) {
  for (const auto& opset : model.opset_import()) {
    if (opset.domain().empty() || opset.domain() == "ai.onnx") return opset.version();
  }
  return 0;
}

absl::Status CheckOnnxQuantizedPacking(const TensorInfo& info, int bits, int64_t group_size,
                                       int64_t default_opset) {
  if (info.dtype != tensor::DType::kF32) {
    return Refuse(info, absl::StrCat("it is ", std::string(tensor::DTypeName(info.dtype)),
                                     "; packed quantized ONNX holds FLOAT weights only; ask for "
                                     "output dense"));
  }
  if (!info.layout || info.shape.size() < 2) {
    return Refuse(info, "no operator uses it as a weight; ask for output dense");
  }
  const int64_t rows = info.shape[info.layout->output_axis];
  const int64_t cols = rows > 0 ? static_cast<int64_t>(info.params) / rows : 0;
  const int64_t columns = group_size > 0 && group_size < cols ? group_size : cols;
  if (bits == 2 || bits == 3) {
    return Refuse(info, absl::StrCat(
        bits, "-bit codes have no onnxruntime operator; use bits 8 (DequantizeLinear) or "
        "4 (MatMulNBits, MatMul weights), or ask for output dense"));
  }
  if (bits == 4) {
    if (info.role != "MatMul.B" || info.shape.size() != 2) {
      return Refuse(info, absl::StrCat(
          "4-bit packed ONNX is com.microsoft MatMulNBits, which replaces a MatMul, and this "
          "weight is ", info.role.empty() ? "not a MatMul's" : info.role,
          "; use bits 8 for it (a recipe rule), exclude it, or ask for output dense"));
    }
    if (group_size > 0 && (!IsPowerOfTwo(group_size) || group_size < 16)) {
      return Refuse(info, absl::StrCat(
          "MatMulNBits needs blocks of a power of two >= 16 input rows, and group_size is ",
          group_size, "; set group_size to 16, 32, 64, 128 or 256 (or 0: one block a column)"));
    }
  } else if (bits != 8) {
    return Refuse(info, absl::StrCat(bits, "-bit codes are not supported"));
  } else if (info.shape.size() != 2 && columns < cols) {
    return Refuse(info, absl::StrCat(
        "DequantizeLinear blocks run along one axis, and the groups of this ", info.role,
        " weight run over in*kh*kw; use group_size 0 (one grid per output channel) for it, "
        "or ask for output dense"));
  } else if (auto s = CheckDequantizeOpset(info, columns < cols, default_opset); !s.ok()) {
    return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<OnnxQuantizedForm> QuantizeOnnxWeight(const TensorInfo& info,
                                                     absl::Span<const float> values,
                                                     const QuantGrids& grids,
                                                     int64_t default_opset) {
  if (auto status = CheckOnnxQuantizedPacking(info, grids.bits, grids.group_size, default_opset);
      !status.ok()) {
    return status;
  }
  auto m = QuantizedCodes(info.name, info.shape, *info.layout, values, grids);
  if (!m.ok()) return m.status();
  absl::StatusOr<OnnxQuantizedForm> form =
      grids.bits == 8 ? DequantizeForm(info, *m, default_opset) : MatMulNBitsForm(info, *m);
  if (!form.ok()) return form;
  for (const onnx::TensorProto& tensor : form->initializers) {
    form->stored_bytes += tensor.raw_data().size();
  }
  return form;
}

absl::Status ApplyOnnxQuantizedForm(onnx::ModelProto& model, onnx::GraphProto& graph,
                                    const std::string& name, const OnnxQuantizedForm& form) {
  if (form.matmul_nbits) {
    std::vector<onnx::NodeProto*> matmuls;
    for (onnx::NodeProto& node : *graph.mutable_node()) {
      for (int i = 0; i < node.input_size(); ++i) {
        if (node.input(i) != name) continue;
        if (node.op_type() != "MatMul" || !node.domain().empty() || i != 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              "packed ONNX output of quantized tensor \"", name, "\": node \"", node.name(),
              "\" (", node.op_type(), ") reads it, and MatMulNBits can only replace MatMul; "
              "use bits 8 for it or ask for output dense"));
        }
        matmuls.push_back(&node);
      }
    }
    // A reader in a subgraph would lose its input when the weight goes.
    const size_t uses = OnnxGraphIndex(*model.mutable_graph()).Uses(name).size();
    if (uses == 0 || uses != matmuls.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "packed ONNX output of quantized tensor \"", name, "\": it is read outside the "
          "MatMuls of its own graph, which MatMulNBits cannot replace; use bits 8 for it or ask "
          "for output dense"));
    }
    for (onnx::NodeProto* node : matmuls) {
      const std::string a = node->input(0);
      node->set_op_type("MatMulNBits");
      node->set_domain(kMicrosoftDomain);
      node->clear_input();
      node->add_input(a);
      for (const onnx::TensorProto& tensor : form.initializers) node->add_input(tensor.name());
      node->clear_attribute();
      SetInt(*node, "K", form.k);
      SetInt(*node, "N", form.n);
      SetInt(*node, "bits", 4);
      SetInt(*node, "block_size", form.block_size);
    }
    bool has_domain = false;
    for (const auto& opset : model.opset_import()) has_domain |= opset.domain() == kMicrosoftDomain;
    if (!has_domain) {
      auto* opset = model.add_opset_import();
      opset->set_domain(kMicrosoftDomain);
      opset->set_version(1);
    }
  } else {
    // At the head of the graph: the weight must exist before any node reads it.
    *graph.add_node() = form.dequantize;
    for (int i = graph.node_size() - 1; i > 0; --i) graph.mutable_node()->SwapElements(i, i - 1);
  }
  for (const onnx::TensorProto& tensor : form.initializers) *graph.add_initializer() = tensor;
  // Old exporters list initializers among the graph inputs too; with the
  // initializer gone such an entry would become an input to feed.
  auto* inputs = graph.mutable_input();
  for (int i = inputs->size() - 1; i >= 0; --i) {
    if (inputs->Get(i).name() == name) inputs->DeleteSubrange(i, 1);
  }
  return absl::OkStatus();
}

}  // namespace bonsai::formats
