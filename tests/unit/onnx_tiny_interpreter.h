// A deliberately naive float32 interpreter for the few ONNX ops the graph-
// rewriting tests build (Conv, BatchNormalization, Gemm, MatMul, elementwise
// ops with broadcasting, pooling to 1x1, Flatten, Concat), so that a rewrite
// can be checked for numerical equivalence without a runtime. Nodes must be
// in topological order, as ONNX requires. Test-only: no bounds checks beyond
// gtest assertions, no performance.
#ifndef BONSAI_TESTS_UNIT_ONNX_TINY_INTERPRETER_H_
#define BONSAI_TESTS_UNIT_ONNX_TINY_INTERPRETER_H_

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "onnx/onnx_pb.h"
#include "server/formats/onnx_attributes.h"
#include "server/surgery/cuttable_tensor.h"

namespace bonsai::testing {

struct Dense {
  std::vector<int64_t> dims;
  std::vector<float> values;
};

using DenseMap = std::map<std::string, Dense>;

namespace tiny {

inline int64_t Count(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

inline std::vector<int64_t> Ints(const onnx::NodeProto& node, const std::string& name,
                                 std::vector<int64_t> fallback) {
  for (const auto& a : node.attribute()) {
    if (a.name() == name) return {a.ints().begin(), a.ints().end()};
  }
  return fallback;
}

// numpy broadcasting of any number of inputs with `op` folded left to right.
template <typename Op>
Dense Broadcast(const std::vector<const Dense*>& inputs, Op op) {
  size_t rank = 0;
  for (const Dense* in : inputs) rank = std::max(rank, in->dims.size());
  std::vector<int64_t> dims(rank, 1);
  for (const Dense* in : inputs) {
    for (size_t i = 0; i < in->dims.size(); ++i) {
      int64_t& d = dims[rank - in->dims.size() + i];
      d = std::max(d, in->dims[i]);
    }
  }
  Dense out{dims, std::vector<float>(Count(dims))};
  std::vector<int64_t> index(rank);
  for (int64_t flat = 0; flat < Count(dims); ++flat) {
    for (int64_t r = rank - 1, rest = flat; r >= 0; --r) {
      index[r] = rest % dims[r];
      rest /= dims[r];
    }
    float acc = 0;
    for (size_t k = 0; k < inputs.size(); ++k) {
      const Dense& in = *inputs[k];
      int64_t offset = 0;
      for (size_t i = 0; i < in.dims.size(); ++i) {
        const int64_t at = in.dims[i] == 1 ? 0 : index[rank - in.dims.size() + i];
        offset = offset * in.dims[i] + at;
      }
      acc = k == 0 ? in.values[offset] : op(acc, in.values[offset]);
    }
    out.values[flat] = acc;
  }
  return out;
}

inline Dense Conv(const onnx::NodeProto& node, const Dense& x, const Dense& w, const Dense* b) {
  const int64_t n = x.dims[0], c = x.dims[1], h = x.dims[2], wd = x.dims[3];
  const int64_t o = w.dims[0], cg = w.dims[1], kh = w.dims[2], kw = w.dims[3];
  const int64_t group = formats::OnnxIntAttribute(node, "group", 1);
  const auto pads = Ints(node, "pads", {0, 0, 0, 0});
  const auto strides = Ints(node, "strides", {1, 1});
  const int64_t oh = (h + pads[0] + pads[2] - kh) / strides[0] + 1;
  const int64_t ow = (wd + pads[1] + pads[3] - kw) / strides[1] + 1;
  Dense y{{n, o, oh, ow}, std::vector<float>(n * o * oh * ow)};
  const int64_t per_group = o / group;
  for (int64_t b0 = 0; b0 < n; ++b0)
    for (int64_t oc = 0; oc < o; ++oc)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double acc = b ? b->values[oc] : 0.0;
          for (int64_t ic = 0; ic < cg; ++ic) {
            const int64_t xc = (oc / per_group) * cg + ic;
            for (int64_t u = 0; u < kh; ++u)
              for (int64_t v = 0; v < kw; ++v) {
                const int64_t yy = i * strides[0] - pads[0] + u, xx = j * strides[1] - pads[1] + v;
                if (yy < 0 || yy >= h || xx < 0 || xx >= wd) continue;
                acc += double(x.values[((b0 * c + xc) * h + yy) * wd + xx]) *
                       w.values[((oc * cg + ic) * kh + u) * kw + v];
              }
          }
          y.values[((b0 * o + oc) * oh + i) * ow + j] = static_cast<float>(acc);
        }
  return y;
}

inline Dense Gemm(const onnx::NodeProto& node, const Dense& a, const Dense& b, const Dense* c) {
  const bool trans_b = formats::OnnxIntAttribute(node, "transB", 0) != 0;
  const int64_t m = a.dims[0], k = a.dims[1], n = trans_b ? b.dims[0] : b.dims[1];
  Dense y{{m, n}, std::vector<float>(m * n)};
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t = 0; t < k; ++t) {
        acc += double(a.values[i * k + t]) * (trans_b ? b.values[j * k + t] : b.values[t * n + j]);
      }
      y.values[i * n + j] = static_cast<float>(acc);
    }
  if (c == nullptr) return y;
  return Broadcast({&y, c}, [](float p, float q) { return p + q; });
}

inline Dense Concat(const onnx::NodeProto& node, const std::vector<const Dense*>& parts) {
  int64_t axis = formats::OnnxIntAttribute(node, "axis", 0);
  std::vector<int64_t> dims = parts[0]->dims;
  if (axis < 0) axis += dims.size();
  dims[axis] = 0;
  for (const Dense* p : parts) dims[axis] += p->dims[axis];
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= dims[d];
  Dense y{dims, {}};
  for (int64_t o = 0; o < outer; ++o) {
    for (const Dense* p : parts) {
      const int64_t block = Count(p->dims) / outer;
      y.values.insert(y.values.end(), p->values.begin() + o * block, p->values.begin() + (o + 1) * block);
    }
  }
  return y;
}

}  // namespace tiny

// Runs `model` on `inputs`; returns every graph output.
inline DenseMap RunTiny(const onnx::ModelProto& model, const DenseMap& inputs) {
  DenseMap values = inputs;
  for (const onnx::TensorProto& t : model.graph().initializer()) {
    auto floats = surgery::ReadFloats(t);
    EXPECT_TRUE(floats.ok()) << floats.status();
    values[t.name()] = {{t.dims().begin(), t.dims().end()}, *floats};
  }
  for (const onnx::NodeProto& node : model.graph().node()) {
    std::vector<const Dense*> in;
    for (const std::string& name : node.input()) {
      in.push_back(name.empty() ? nullptr : &values.at(name));
    }
    const std::string& op = node.op_type();
    Dense out;
    if (op == "Conv") {
      out = tiny::Conv(node, *in[0], *in[1], in.size() > 2 ? in[2] : nullptr);
    } else if (op == "Gemm") {
      out = tiny::Gemm(node, *in[0], *in[1], in.size() > 2 ? in[2] : nullptr);
    } else if (op == "MatMul") {
      onnx::NodeProto plain;
      out = tiny::Gemm(plain, *in[0], *in[1], nullptr);
    } else if (op == "BatchNormalization") {
      const float eps = formats::OnnxFloatAttribute(node, "epsilon", 1e-5f);
      out = *in[0];
      const int64_t c = out.dims[1], inner = tiny::Count(out.dims) / (out.dims[0] * c);
      for (int64_t i = 0; i < tiny::Count(out.dims); ++i) {
        const int64_t ch = (i / inner) % c;
        out.values[i] = in[1]->values[ch] * (out.values[i] - in[3]->values[ch]) /
                            std::sqrt(in[4]->values[ch] + eps) + in[2]->values[ch];
      }
    } else if (op == "Relu" || op == "Sigmoid" || op == "Identity") {
      out = *in[0];
      for (float& v : out.values) {
        v = op == "Relu" ? std::max(v, 0.0f) : op == "Sigmoid" ? 1.0f / (1.0f + std::exp(-v)) : v;
      }
    } else if (op == "Add") {
      out = tiny::Broadcast(in, [](float a, float b) { return a + b; });
    } else if (op == "Mul") {
      out = tiny::Broadcast(in, [](float a, float b) { return a * b; });
    } else if (op == "GlobalAveragePool") {
      const Dense& x = *in[0];
      const int64_t nc = x.dims[0] * x.dims[1], inner = tiny::Count(x.dims) / nc;
      out.dims = {x.dims[0], x.dims[1], 1, 1};
      for (int64_t i = 0; i < nc; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < inner; ++j) acc += x.values[i * inner + j];
        out.values.push_back(static_cast<float>(acc / inner));
      }
    } else if (op == "Flatten") {
      out = *in[0];
      out.dims = {out.dims[0], tiny::Count(out.dims) / out.dims[0]};
    } else if (op == "Concat") {
      out = tiny::Concat(node, in);
    } else {
      ADD_FAILURE() << "tiny interpreter has no " << op;
      return {};
    }
    values[node.output(0)] = std::move(out);
  }
  DenseMap outputs;
  for (const onnx::ValueInfoProto& output : model.graph().output()) {
    outputs[output.name()] = values.at(output.name());
  }
  return outputs;
}

}  // namespace bonsai::testing

#endif  // BONSAI_TESTS_UNIT_ONNX_TINY_INTERPRETER_H_
