#include "server/surgery/channel_pruning.h"

#include <cmath>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "onnx/checker.h"
#include "onnx/shape_inference/implementation.h"
#include "server/formats/onnx_attributes.h"
#include "server/formats/onnx_graph_index.h"
#include "server/formats/onnx_output_heads.h"
#include "server/methods/structured.h"
#include "server/surgery/cuttable_tensor.h"
#include "tests/unit/onnx_tiny_interpreter.h"

namespace bonsai::surgery {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;
using testing::Dense;
using testing::DenseMap;
using testing::RunTiny;
using methods::NormKind;

// Builds small graphs through the ModelProto API, as an exporter would.
class GraphBuilder {
 public:
  GraphBuilder() {
    model_.set_ir_version(8);
    model_.add_opset_import()->set_version(13);
    model_.mutable_graph()->set_name("test");
  }

  GraphBuilder& Input(const std::string& name, std::vector<int64_t> dims) {
    SetType(model_.mutable_graph()->add_input(), name, dims);
    return *this;
  }
  GraphBuilder& Output(const std::string& name, std::vector<int64_t> dims) {
    SetType(model_.mutable_graph()->add_output(), name, dims);
    return *this;
  }

  // Deterministic values; output channel c (axis `scale_axis`) is multiplied
  // by scales[c] when scales are given, so tests control channel norms.
  GraphBuilder& Weight(const std::string& name, std::vector<int64_t> dims, int seed,
                       std::vector<float> scales = {}, int scale_axis = 0) {
    onnx::TensorProto* t = model_.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    int64_t count = 1, inner = 1;
    for (int64_t d : dims) count *= d;
    for (size_t d = scale_axis + 1; d < dims.size(); ++d) inner *= dims[d];
    std::vector<float> values(count);
    for (int64_t i = 0; i < count; ++i) {
      values[i] = 0.5f * std::sin(seed * 12.9898f + i * 78.233f);
      if (!scales.empty()) values[i] *= scales[(i / inner) % dims[scale_axis]];
    }
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(values.data(), values.size() * sizeof(float));
    return *this;
  }
  // Positive values, for variances.
  GraphBuilder& PositiveWeight(const std::string& name, std::vector<int64_t> dims, int seed) {
    Weight(name, dims, seed);
    onnx::TensorProto* t = model_.mutable_graph()->mutable_initializer(
        model_.graph().initializer_size() - 1);
    std::vector<float> values = *ReadFloats(*t);
    for (float& v : values) v = std::abs(v) + 0.5f;
    t->set_raw_data(values.data(), values.size() * sizeof(float));
    return *this;
  }

  onnx::NodeProto& Node(const std::string& op, std::vector<std::string> inputs,
                        std::vector<std::string> outputs) {
    onnx::NodeProto* node = model_.mutable_graph()->add_node();
    node->set_op_type(op);
    node->set_name(outputs[0] + "_" + op);
    for (const auto& i : inputs) node->add_input(i);
    for (const auto& o : outputs) node->add_output(o);
    return *node;
  }

  // Conv (3x3 with padding 1 unless `kernel` is 1) + BatchNormalization.
  void ConvBn(const std::string& x, const std::string& y, const std::string& prefix,
              int64_t in, int64_t out, int seed, int64_t kernel = 3) {
    Weight(prefix + ".w", {out, in, kernel, kernel}, seed);
    Conv(x, prefix + ".conv", prefix + ".w", "", kernel);
    Weight(prefix + ".bn.scale", {out}, seed + 1);
    Weight(prefix + ".bn.bias", {out}, seed + 2);
    Weight(prefix + ".bn.mean", {out}, seed + 3);
    PositiveWeight(prefix + ".bn.var", {out}, seed + 4);
    Node("BatchNormalization", {prefix + ".conv", prefix + ".bn.scale", prefix + ".bn.bias",
                                prefix + ".bn.mean", prefix + ".bn.var"}, {y});
  }

  onnx::NodeProto& Conv(const std::string& x, const std::string& y, const std::string& w,
                        const std::string& b = "", int64_t kernel = 3, int64_t group = 1) {
    std::vector<std::string> inputs = {x, w};
    if (!b.empty()) inputs.push_back(b);
    onnx::NodeProto& node = Node("Conv", inputs, {y});
    const int64_t pad = kernel / 2;
    Ints(node, "pads", {pad, pad, pad, pad});
    Ints(node, "kernel_shape", {kernel, kernel});
    if (group != 1) Int(node, "group", group);
    return node;
  }

  static void Int(onnx::NodeProto& node, const std::string& name, int64_t value) {
    onnx::AttributeProto* a = node.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(value);
  }
  static void Ints(onnx::NodeProto& node, const std::string& name, std::vector<int64_t> values) {
    onnx::AttributeProto* a = node.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t v : values) a->add_ints(v);
  }

  onnx::ModelProto& model() { return model_; }

 private:
  static void SetType(onnx::ValueInfoProto* info, const std::string& name,
                      const std::vector<int64_t>& dims) {
    info->set_name(name);
    auto* tensor = info->mutable_type()->mutable_tensor_type();
    tensor->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) tensor->mutable_shape()->add_dim()->set_dim_value(d);
  }

  onnx::ModelProto model_;
};

const onnx::TensorProto& Initializer(const onnx::ModelProto& model, const std::string& name) {
  for (const auto& t : model.graph().initializer()) {
    if (t.name() == name) return t;
  }
  static onnx::TensorProto missing;
  ADD_FAILURE() << "no initializer " << name;
  return missing;
}

std::vector<int64_t> Dims(const onnx::ModelProto& model, const std::string& name) {
  const auto& t = Initializer(model, name);
  return {t.dims().begin(), t.dims().end()};
}

// The ONNX checker and strict shape inference (which also checks inferred
// shapes against every declared one) both accept the model.
void ExpectValidOnnx(const onnx::ModelProto& model) {
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "checker: " << e.what();
  }
  onnx::ModelProto copy = model;
  try {
    onnx::shape_inference::InferShapes(copy, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(true, 1, false));
  } catch (const std::exception& e) {
    ADD_FAILURE() << "shape inference: " << e.what();
  }
}

enum class Zero { kConsumerInputs, kProducerRows };

// Zeroes, in a copy of the original, the slices that `result` cut: the
// consumers' input channels give the model pruning must equal; the
// producers' rows alone are what mask mode does.
onnx::ModelProto ZeroCuts(const onnx::ModelProto& original, const ChannelPruningResult& result,
                          Zero what) {
  const bool input_channels = what == Zero::kConsumerInputs;
  onnx::ModelProto masked = original;
  for (const PrunedTensor& pruned : result.tensors) {
    if (what == Zero::kProducerRows && pruned.role.find("producer") == std::string::npos) continue;
    for (onnx::TensorProto& t : *masked.mutable_graph()->mutable_initializer()) {
      if (t.name() != pruned.name) continue;
      std::vector<float> values = *ReadFloats(t);
      for (const ChannelCut& cut : pruned.cuts) {
        if (cut.input_channels != input_channels) continue;
        int64_t inner = 1;
        for (int d = cut.axis + 1; d < t.dims_size(); ++d) inner *= t.dims(d);
        for (size_t i = 0; i < values.size(); ++i) {
          const int64_t channel = (i / inner) % t.dims(cut.axis);
          if (std::binary_search(cut.removed.begin(), cut.removed.end(), channel)) values[i] = 0;
        }
      }
      t.set_raw_data(values.data(), values.size() * sizeof(float));
    }
  }
  return masked;
}

Dense Input(std::vector<int64_t> dims, int seed) {
  Dense x{dims, {}};
  int64_t count = 1;
  for (int64_t d : dims) count *= d;
  for (int64_t i = 0; i < count; ++i) x.values.push_back(std::cos(seed + 0.37f * i));
  return x;
}

double MaxDifference(const DenseMap& a, const DenseMap& b) {
  double worst = 0;
  for (const auto& [name, dense] : a) {
    const Dense& other = b.at(name);
    EXPECT_EQ(dense.dims, other.dims) << name;
    for (size_t i = 0; i < dense.values.size() && i < other.values.size(); ++i) {
      worst = std::max(worst, double(std::abs(dense.values[i] - other.values[i])));
    }
  }
  return worst;
}

ChannelPruningOptions Half(NormKind norm = NormKind::kL2) {
  ChannelPruningOptions options;
  options.fraction = 0.5;
  options.norm = norm;
  return options;
}

// x[2,8] -> Gemm(W1 [16,8], transB) -> Relu -> Gemm(W2 [16,4]) -> y.
// Neuron c of W1 has norm proportional to scales[c].
GraphBuilder Mlp(std::vector<float> scales, int64_t hidden = 16) {
  GraphBuilder b;
  b.Input("x", {2, 8}).Output("y", {2, 4});
  b.Weight("w1", {hidden, 8}, 1, scales, 0).Weight("b1", {hidden}, 2);
  b.Weight("w2", {hidden, 4}, 3).Weight("b2", {4}, 4);
  GraphBuilder::Int(b.Node("Gemm", {"x", "w1", "b1"}, {"h"}), "transB", 1);
  b.Node("Relu", {"h"}, {"r"});
  b.Node("Gemm", {"r", "w2", "b2"}, {"y"});
  return b;
}

TEST(OnnxChannelPruning, GemmReluGemmLosesLowestNormNeurons) {
  std::vector<float> scales(16, 10.0f);
  for (int c : {1, 4, 6, 9, 10, 12, 13, 15}) scales[c] = 0.01f * (c + 1);
  GraphBuilder b = Mlp(scales);
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_THAT(result->groups[0].producer_weights, ElementsAre("w1"));
  EXPECT_THAT(result->groups[0].removed, ElementsAre(1, 4, 6, 9, 10, 12, 13, 15));
  EXPECT_THAT(Dims(b.model(), "w1"), ElementsAre(8, 8));
  EXPECT_THAT(Dims(b.model(), "b1"), ElementsAre(8));
  EXPECT_THAT(Dims(b.model(), "w2"), ElementsAre(8, 4));
  EXPECT_THAT(Dims(b.model(), "b2"), ElementsAre(4));
  EXPECT_EQ(result->params_before, 16u * 8 + 16 + 16 * 4 + 4);
  EXPECT_EQ(result->params_after, 8u * 8 + 8 + 8 * 4 + 4);
  EXPECT_EQ(result->macs_before, 16u * 8 + 16 * 4);
  EXPECT_EQ(result->macs_after, 8u * 8 + 8 * 4);
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, GemmMlpEqualsOriginalWithConsumerInputsZeroed) {
  GraphBuilder b = Mlp({});
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half(NormKind::kL1));
  ASSERT_TRUE(result.ok()) << result.status();
  const DenseMap inputs = {{"x", Input({2, 8}, 1)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-5);
}

TEST(OnnxChannelPruning, EqualNormsRemoveLowerIndicesFirst) {
  GraphBuilder b;
  b.Input("x", {1, 4}).Output("y", {1, 2});
  onnx::TensorProto* w = b.model().mutable_graph()->add_initializer();
  w->set_name("w1");
  w->set_data_type(onnx::TensorProto::FLOAT);
  w->add_dims(4);
  w->add_dims(6);
  for (int i = 0; i < 24; ++i) w->add_float_data(i % 2 == 0 ? 1.0f : -1.0f);
  b.Weight("w2", {6, 2}, 2);
  b.Node("MatMul", {"x", "w1"}, {"h"});
  b.Node("MatMul", {"h", "w2"}, {"y"});
  auto result = PruneChannelsPhysically(b.model(), Half(NormKind::kL1));
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_THAT(result->groups[0].removed, ElementsAre(0, 1, 2));
  // Stored as float_data before, so still float_data after.
  const onnx::TensorProto& cut = Initializer(b.model(), "w1");
  EXPECT_FALSE(cut.has_raw_data());
  EXPECT_EQ(cut.float_data_size(), 12);
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, HalfChannelCountsRoundToEvenLikeMaskMode) {
  for (int64_t channels : {5, 7}) {
    GraphBuilder b;
    b.Input("x", {1, 4}).Output("y", {1, 2});
    b.Weight("w1", {4, channels}, 1).Weight("w2", {channels, 2}, 2);
    b.Node("MatMul", {"x", "w1"}, {"h"});
    b.Node("MatMul", {"h", "w2"}, {"y"});
    auto result = PruneChannelsPhysically(b.model(), Half());
    ASSERT_TRUE(result.ok()) << result.status();
    // 2.5 -> 2 and 3.5 -> 4 removed (as torch's round): 3 kept either way.
    EXPECT_THAT(Dims(b.model(), "w1"), ElementsAre(4, 3)) << channels;
  }
}

TEST(OnnxChannelPruning, MatMulWithBiasAddShrinksWeightsAndBias) {
  GraphBuilder b;
  b.Input("x", {3, 8}).Output("y", {3, 4});
  b.Weight("w1", {8, 16}, 1).Weight("b1", {16}, 2).Weight("w2", {16, 4}, 3);
  b.Node("MatMul", {"x", "w1"}, {"h"});
  b.Node("Add", {"h", "b1"}, {"hb"});
  b.Node("Relu", {"hb"}, {"r"});
  b.Node("MatMul", {"r", "w2"}, {"y"});
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "w1"), ElementsAre(8, 8));
  EXPECT_THAT(Dims(b.model(), "b1"), ElementsAre(8));
  EXPECT_THAT(Dims(b.model(), "w2"), ElementsAre(8, 4));
  ExpectValidOnnx(b.model());
  const DenseMap inputs = {{"x", Input({3, 8}, 2)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-5);
}

// x[1,3,8,8] -> Conv(8) -> BN -> Relu -> Conv(4, 1x1) -> y.
GraphBuilder ConvBnReluConv() {
  GraphBuilder b;
  b.Input("x", {1, 3, 8, 8}).Output("y", {1, 4, 8, 8});
  b.ConvBn("x", "bn1", "c1", 3, 8, 10);
  b.Node("Relu", {"bn1"}, {"r1"});
  b.Weight("c2.w", {4, 8, 1, 1}, 20).Weight("c2.b", {4}, 21);
  b.Conv("r1", "y", "c2.w", "c2.b", 1);
  return b;
}

TEST(OnnxChannelPruning, ConvBatchNormReluConvShrinksEveryChannelTensor) {
  GraphBuilder b = ConvBnReluConv();
  // Stale intermediate shapes from an exporter must not survive.
  auto* info = b.model().mutable_graph()->add_value_info();
  info->set_name("r1");
  info->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : {1, 8, 8, 8}) {
    info->mutable_type()->mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(d);
  }
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "c1.w"), ElementsAre(4, 3, 3, 3));
  for (const char* p : {"c1.bn.scale", "c1.bn.bias", "c1.bn.mean", "c1.bn.var"}) {
    EXPECT_THAT(Dims(b.model(), p), ElementsAre(4)) << p;
  }
  EXPECT_THAT(Dims(b.model(), "c2.w"), ElementsAre(4, 4, 1, 1));
  EXPECT_THAT(Dims(b.model(), "c2.b"), ElementsAre(4));
  EXPECT_EQ(result->macs_before, 8u * 3 * 9 * 64 + 4 * 8 * 64);
  EXPECT_EQ(result->macs_after, 4u * 3 * 9 * 64 + 4 * 4 * 64);
  EXPECT_FALSE(result->macs_per_position);
  EXPECT_THAT(result->notes, ::testing::Contains(HasSubstr("graph output 'y'")));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, ConvBatchNormEqualsOriginalWithConsumerInputsZeroed) {
  GraphBuilder b = ConvBnReluConv();
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  const DenseMap inputs = {{"x", Input({1, 3, 8, 8}, 3)}};
  const DenseMap pruned = RunTiny(b.model(), inputs);
  EXPECT_LT(MaxDifference(pruned, RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-4);
  // Zeroing only the producers' rows ("mask" mode) is another model: the
  // removed channels still emit BatchNormalization's shift.
  EXPECT_GT(MaxDifference(pruned, RunTiny(ZeroCuts(original, *result, Zero::kProducerRows), inputs)), 1e-3);
}

// stem Conv -> Relu = s; s -> ConvBn -> Relu -> ConvBn -> Add(., s) -> Relu -> head Conv.
GraphBuilder ResidualBlock(bool skip_from_graph_input) {
  GraphBuilder b;
  b.Input("x", {1, skip_from_graph_input ? 8 : 3, 6, 6}).Output("y", {1, 4, 6, 6});
  std::string s = "x";
  if (!skip_from_graph_input) {
    b.Weight("stem.w", {8, 3, 3, 3}, 30);
    b.Conv("x", "stem", "stem.w");
    b.Node("Relu", {"stem"}, {"s"});
    s = "s";
  }
  b.ConvBn(s, "bn1", "c1", 8, 8, 40);
  b.Node("Relu", {"bn1"}, {"r1"});
  b.ConvBn("r1", "bn2", "c2", 8, 8, 50);
  b.Node("Add", {"bn2", s}, {"sum"});
  b.Node("Relu", {"sum"}, {"r2"});
  b.Weight("head.w", {4, 8, 1, 1}, 60);
  b.Conv("r2", "y", "head.w", "", 1);
  return b;
}

TEST(OnnxChannelPruning, ResidualAddPrunesCoupledProducersTogether) {
  GraphBuilder b = ResidualBlock(false);
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  std::vector<std::vector<std::string>> groups;
  for (const PrunedGroup& g : result->groups) groups.push_back(g.producer_weights);
  EXPECT_THAT(groups, UnorderedElementsAre(ElementsAre("stem.w", "c2.w"), ElementsAre("c1.w")));
  EXPECT_THAT(Dims(b.model(), "stem.w"), ElementsAre(4, 3, 3, 3));
  EXPECT_THAT(Dims(b.model(), "c1.w"), ElementsAre(4, 4, 3, 3));
  EXPECT_THAT(Dims(b.model(), "c2.w"), ElementsAre(4, 4, 3, 3));
  EXPECT_THAT(Dims(b.model(), "c2.bn.var"), ElementsAre(4));
  EXPECT_THAT(Dims(b.model(), "head.w"), ElementsAre(4, 4, 1, 1));
  ExpectValidOnnx(b.model());
  const DenseMap inputs = {{"x", Input({1, 3, 6, 6}, 4)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-4);
}

TEST(OnnxChannelPruning, ResidualFromGraphInputLeavesSkipGroupAlone) {
  GraphBuilder b = ResidualBlock(true);
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_THAT(result->groups[0].producer_weights, ElementsAre("c1.w"));
  EXPECT_THAT(Dims(b.model(), "c2.w"), ElementsAre(8, 4, 3, 3));
  EXPECT_THAT(result->notes, ::testing::Contains(AllOf(HasSubstr("c2.w"), HasSubstr("'x'"))));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, ConcatLeavesBothBranchesAlone) {
  GraphBuilder b;
  b.Input("x", {1, 3, 6, 6}).Output("y", {1, 4, 6, 6});
  b.Weight("a.w", {8, 3, 3, 3}, 1).Weight("b.w", {8, 3, 3, 3}, 2).Weight("head.w", {4, 16, 1, 1}, 3);
  b.Conv("x", "a", "a.w");
  b.Conv("x", "b", "b.w");
  GraphBuilder::Int(b.Node("Concat", {"a", "b"}, {"cat"}), "axis", 1);
  b.Conv("cat", "y", "head.w", "", 1);
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(result->tensors, IsEmpty());
  EXPECT_EQ(result->params_after, result->params_before);
  EXPECT_THAT(result->notes, ::testing::Contains(AllOf(HasSubstr("a.w"), HasSubstr("Concat"))));
  EXPECT_THAT(result->notes, ::testing::Contains(AllOf(HasSubstr("b.w"), HasSubstr("Concat"))));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, DepthwiseConvPassesChannelsThroughAndShrinksItsGroup) {
  GraphBuilder b;
  b.Input("x", {1, 3, 6, 6}).Output("y", {1, 4, 6, 6});
  b.Weight("pw.w", {8, 3, 1, 1}, 1).Weight("dw.w", {8, 1, 3, 3}, 2).Weight("dw.b", {8}, 3);
  b.Weight("head.w", {4, 8, 1, 1}, 4);
  b.Conv("x", "pw", "pw.w", "", 1);
  b.Conv("pw", "dw", "dw.w", "dw.b", 3, 8);
  b.Node("Relu", {"dw"}, {"r"});
  b.Conv("r", "y", "head.w", "", 1);
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_THAT(result->groups[0].producer_weights, ElementsAre("pw.w"));
  EXPECT_THAT(Dims(b.model(), "pw.w"), ElementsAre(4, 3, 1, 1));
  EXPECT_THAT(Dims(b.model(), "dw.w"), ElementsAre(4, 1, 3, 3));
  EXPECT_THAT(Dims(b.model(), "dw.b"), ElementsAre(4));
  EXPECT_THAT(Dims(b.model(), "head.w"), ElementsAre(4, 4, 1, 1));
  EXPECT_EQ(formats::OnnxIntAttribute(b.model().graph().node(1), "group", 0), 4);
  EXPECT_EQ(result->macs_after, (4u * 3 + 4 * 9 + 4 * 4) * 36);
  ExpectValidOnnx(b.model());
  const DenseMap inputs = {{"x", Input({1, 3, 6, 6}, 7)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-5);
}

TEST(OnnxChannelPruning, GroupedConvIsLeftAloneWithNote) {
  GraphBuilder b;
  b.Input("x", {1, 3, 6, 6}).Output("y", {1, 4, 6, 6});
  b.Weight("pw.w", {8, 3, 1, 1}, 1).Weight("g.w", {8, 4, 3, 3}, 2).Weight("head.w", {4, 8, 1, 1}, 3);
  b.Conv("x", "pw", "pw.w", "", 1);
  b.Conv("pw", "g", "g.w", "", 3, 2);
  b.Conv("g", "y", "head.w", "", 1);
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(result->notes, ::testing::Contains(HasSubstr("grouped convolution (group 2)")));
  EXPECT_THAT(result->notes, ::testing::Contains(AllOf(HasSubstr("pw.w"), HasSubstr("grouped"))));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, FlattenAfterGlobalPoolCutsGemmInputs) {
  GraphBuilder b;
  b.Input("x", {2, 3, 6, 6}).Output("y", {2, 5});
  b.Weight("c.w", {8, 3, 3, 3}, 1).Weight("c.b", {8}, 2).Weight("fc.w", {5, 8}, 3).Weight("fc.b", {5}, 4);
  b.Conv("x", "c", "c.w", "c.b");
  b.Node("Relu", {"c"}, {"r"});
  b.Node("GlobalAveragePool", {"r"}, {"p"});
  b.Node("Flatten", {"p"}, {"f"});
  GraphBuilder::Int(b.Node("Gemm", {"f", "fc.w", "fc.b"}, {"y"}), "transB", 1);
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "c.w"), ElementsAre(4, 3, 3, 3));
  EXPECT_THAT(Dims(b.model(), "fc.w"), ElementsAre(5, 4));
  ExpectValidOnnx(b.model());
  const DenseMap inputs = {{"x", Input({2, 3, 6, 6}, 5)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-5);
}

TEST(OnnxChannelPruning, SiluGateOfTheSameChannelsIsFollowed) {
  // Conv -> x * Sigmoid(x) -> Conv: both Mul inputs carry the same channels.
  GraphBuilder b;
  b.Input("x", {1, 3, 6, 6}).Output("y", {1, 4, 6, 6});
  b.Weight("c1.w", {8, 3, 3, 3}, 1).Weight("c1.b", {8}, 2).Weight("c2.w", {4, 8, 1, 1}, 3);
  b.Conv("x", "c1", "c1.w", "c1.b");
  b.Node("Sigmoid", {"c1"}, {"gate"});
  b.Node("Mul", {"c1", "gate"}, {"silu"});
  b.Conv("silu", "y", "c2.w", "", 1);
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "c1.b"), ElementsAre(4));
  EXPECT_THAT(Dims(b.model(), "c2.w"), ElementsAre(4, 4, 1, 1));
  ExpectValidOnnx(b.model());
  const DenseMap inputs = {{"x", Input({1, 3, 6, 6}, 6)}};
  EXPECT_LT(MaxDifference(RunTiny(b.model(), inputs),
                          RunTiny(ZeroCuts(original, *result, Zero::kConsumerInputs), inputs)), 1e-5);
}

TEST(OnnxChannelPruning, WeightReadThroughIdentityIsCut) {
  GraphBuilder b;
  b.Input("x", {2, 8}).Output("y", {2, 4});
  b.Weight("w1", {16, 8}, 1).Weight("w2", {16, 4}, 3);
  b.Node("Identity", {"w2"}, {"w2_alias"});
  GraphBuilder::Int(b.Node("Gemm", {"x", "w1"}, {"h"}), "transB", 1);
  b.Node("Relu", {"h"}, {"r"});
  b.Node("Gemm", {"r", "w2_alias"}, {"y"});
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "w2"), ElementsAre(8, 4));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, SharedWeightIsLeftAlone) {
  GraphBuilder b;
  b.Input("x", {2, 8}).Output("y", {2, 8});
  b.Weight("w", {8, 8}, 1).Weight("head", {8, 8}, 2);
  b.Node("MatMul", {"x", "w"}, {"h1"});
  b.Node("MatMul", {"h1", "w"}, {"h2"});
  b.Node("MatMul", {"h2", "head"}, {"y"});
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(Dims(b.model(), "w"), ElementsAre(8, 8));
  EXPECT_THAT(result->notes, ::testing::Contains(HasSubstr("shared")));
}

TEST(OnnxChannelPruning, ChannelsIntoReshapeAreLeftAlone) {
  GraphBuilder b;
  b.Input("x", {1, 3, 4, 4}).Output("y", {1, 10});
  b.Weight("c.w", {8, 3, 3, 3}, 1).Weight("fc.w", {128, 10}, 2);
  onnx::TensorProto* shape = b.model().mutable_graph()->add_initializer();
  shape->set_name("shape");
  shape->set_data_type(onnx::TensorProto::INT64);
  shape->add_dims(2);
  shape->add_int64_data(1);
  shape->add_int64_data(128);
  b.Conv("x", "c", "c.w");
  b.Node("Reshape", {"c", "shape"}, {"flat"});
  b.Node("MatMul", {"flat", "fc.w"}, {"y"});
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(Dims(b.model(), "c.w"), ElementsAre(8, 3, 3, 3));
  EXPECT_THAT(result->notes, ::testing::Contains(AllOf(HasSubstr("c.w"), HasSubstr("Reshape"))));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, WeightInConstantNodeIsCut) {
  GraphBuilder b = Mlp({});
  // Move w1 from the initializers into a Constant node, as some exporters do.
  auto* inits = b.model().mutable_graph()->mutable_initializer();
  onnx::TensorProto w1 = inits->Get(0);
  inits->DeleteSubrange(0, 1);
  onnx::NodeProto constant;
  constant.set_op_type("Constant");
  constant.add_output("w1");
  onnx::AttributeProto* value = constant.add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  *value->mutable_t() = w1;
  value->mutable_t()->clear_name();
  auto* nodes = b.model().mutable_graph()->mutable_node();
  *nodes->Add() = constant;
  std::rotate(nodes->begin(), nodes->end() - 1, nodes->end());
  const onnx::ModelProto original = b.model();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_THAT(result->groups[0].producer_weights, ElementsAre("w1"));
  EXPECT_EQ(b.model().graph().node(0).attribute(0).t().dims(0), 8);
  EXPECT_THAT(Dims(b.model(), "w2"), ElementsAre(8, 4));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, InitializerListedAsGraphInputGetsItsNewShape) {
  GraphBuilder b = Mlp({});
  b.Input("w2", {16, 4});  // as exporters for IR < 4 list every initializer
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  const auto& shape = b.model().graph().input(1).type().tensor_type().shape();
  ASSERT_EQ(shape.dim_size(), 2);
  EXPECT_EQ(shape.dim(0).dim_value(), 8);
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, UnknownSpatialSizeCountsConvMacsPerPosition) {
  GraphBuilder b = ConvBnReluConv();
  auto* dims = b.model().mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()
                   ->mutable_shape()->mutable_dim();
  dims->Mutable(2)->set_dim_param("height");
  dims->Mutable(3)->set_dim_param("width");
  auto* out = b.model().mutable_graph()->mutable_output(0)->mutable_type()->mutable_tensor_type()
                  ->mutable_shape()->mutable_dim();
  out->Mutable(2)->set_dim_param("height");
  out->Mutable(3)->set_dim_param("width");
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->macs_per_position);
  EXPECT_EQ(result->macs_before, 8u * 3 * 9 + 4 * 8);
  EXPECT_EQ(result->macs_after, 4u * 3 * 9 + 4 * 4);
  EXPECT_THAT(Dims(b.model(), "c2.w"), ElementsAre(4, 4, 1, 1));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, UnselectedProducerIsUntouched) {
  GraphBuilder b = Mlp({});
  ChannelPruningOptions options = Half();
  options.selected = [](const std::string& name) { return name != "w1"; };
  auto result = PruneChannelsPhysically(b.model(), options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(Dims(b.model(), "w1"), ElementsAre(16, 8));
}

TEST(OnnxChannelPruning, KeepsAtLeastOneChannel) {
  GraphBuilder b = Mlp({});
  ChannelPruningOptions options = Half();
  options.fraction = 1.0;
  auto result = PruneChannelsPhysically(b.model(), options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(Dims(b.model(), "w1"), ElementsAre(1, 8));
  ExpectValidOnnx(b.model());
}

TEST(OnnxChannelPruning, FractionOutsideUnitIntervalIsInvalidArgument) {
  GraphBuilder b = Mlp({});
  ChannelPruningOptions options = Half();
  options.fraction = 1.5;
  EXPECT_EQ(PruneChannelsPhysically(b.model(), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OnnxChannelPruning, NonFloatWeightIsLeftAloneWithNote) {
  GraphBuilder b = Mlp({});
  onnx::TensorProto* w1 = b.model().mutable_graph()->mutable_initializer(0);
  w1->set_data_type(onnx::TensorProto::DOUBLE);
  w1->set_raw_data(std::string(16 * 8 * 8, '\0'));
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->groups, IsEmpty());
  EXPECT_THAT(result->notes, ::testing::Contains(HasSubstr("not FLOAT")));
}

TEST(OnnxChannelPruning, SerializedModelShrinksWithItsParameters) {
  // Wide enough that names and attributes are a small part of the file.
  GraphBuilder b = Mlp({}, 512);
  const size_t before = b.model().SerializeAsString().size();
  auto result = PruneChannelsPhysically(b.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  const size_t after = b.model().SerializeAsString().size();
  const double expected = double(result->params_after) / result->params_before;
  EXPECT_NEAR(double(after) / before, expected, 0.01);
}


// A MatMul weight [in, out] whose output channel c has base[c] in row 0,
// tiny[c] in row 1 and zeros elsewhere: L2 norm sqrt(base^2 + tiny^2).
void AddColumnWeight(GraphBuilder& g, const std::string& name, int64_t in,
                     const std::vector<float>& base, const std::vector<float>& tiny) {
  const int64_t out = static_cast<int64_t>(base.size());
  std::vector<float> values(in * out, 0.0f);
  for (int64_t c = 0; c < out; ++c) {
    values[c] = base[c];
    values[out + c] = tiny[c];
  }
  onnx::TensorProto* t = g.model().mutable_graph()->add_initializer();
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  t->add_dims(in);
  t->add_dims(out);
  t->set_raw_data(values.data(), values.size() * sizeof(float));
}

// Mask mode (methods::ChannelsToRemove, per weight) and physical mode (per
// group) must remove the same channels of every lone layer, also where the
// norms differ by less than a float can tell: 1 + 1e-4 squared under a
// square root is 1.000000005, which rounds to 1.0f. Ranked in float, mask
// mode used to remove channels 0, 1, 2 of w1 where physical mode removed
// 0, 1, 3.
TEST(ChannelPruning, MaskAndPhysicalModeRemoveTheSameChannelsOfEveryLayer) {
  GraphBuilder g;
  g.Input("x", {1, 8}).Output("y", {1, 4});
  AddColumnWeight(g, "w1", 8, {1, 1, 1, 1, 5, 5}, {1e-4f, 0, 1e-4f, 0, 0, 0});
  AddColumnWeight(g, "w2", 6, {5, 5, 1, 1, 1, 1}, {0, 0, 1e-4f, 0, 1e-4f, 0});
  g.Weight("w3", {6, 4}, 3);
  g.Node("MatMul", {"x", "w1"}, {"h1"});
  g.Node("Relu", {"h1"}, {"a1"});
  g.Node("MatMul", {"a1", "w2"}, {"h2"});
  g.Node("Relu", {"h2"}, {"a2"});
  g.Node("MatMul", {"a2", "w3"}, {"y"});

  // Mask mode's choice, from the weights as uploaded (ONNX MatMul B layout).
  std::map<std::string, std::vector<int64_t>> mask;
  for (const onnx::TensorProto& t : g.model().graph().initializer()) {
    formats::TensorInfo info;
    info.name = t.name();
    info.shape.assign(t.dims().begin(), t.dims().end());
    info.layout = formats::WeightLayout{1, 0};
    tensor::FloatTensor values;
    values.shape = info.shape;
    values.values = *ReadFloats(t);
    mask[t.name()] = methods::ChannelsToRemove({&info, &values}, NormKind::kL2, 0.5);
  }
  ASSERT_THAT(mask["w1"], ElementsAre(0, 1, 3));
  ASSERT_THAT(mask["w2"], ElementsAre(2, 3, 5));

  auto result = PruneChannelsPhysically(g.model(), Half());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 2u);  // w3 makes the output: left whole
  for (const PrunedGroup& group : result->groups) {
    ASSERT_EQ(group.producer_weights.size(), 1u);
    EXPECT_EQ(group.removed, mask[group.producer_weights[0]]) << group.producer_weights[0];
  }
}
}  // namespace
}  // namespace bonsai::surgery

namespace bonsai::surgery {
namespace {

// Mask mode asks the same question: whose output channels are the outputs.
TEST(OnnxOutputHeads, WeightsReachingAnOutputThroughAnyOpButAnotherLayerAreHeads) {
  GraphBuilder g;
  g.Input("x", {1, 8}).Output("probs", {1, 4});
  g.Weight("w1", {8, 6}, 1).Weight("w2", {6, 4}, 2);
  g.Node("MatMul", {"x", "w1"}, {"h"});
  g.Node("Relu", {"h"}, {"a"});
  g.Node("MatMul", {"a", "w2"}, {"logits"});
  g.Node("Softmax", {"logits"}, {"probs"});
  formats::OnnxGraphIndex index(*g.model().mutable_graph());
  const auto heads = formats::WeightsReachingGraphOutputs(index);
  ASSERT_EQ(heads.size(), 1u);
  EXPECT_EQ(heads.at("w2"), "probs");

  // Physical mode leaves the head's group whole for the same reason.
  ChannelPruningOptions options;
  options.fraction = 0.5;
  auto result = PruneChannelsPhysically(g.model(), options);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->groups.size(), 1u);
  EXPECT_EQ(result->groups[0].producer_weights, std::vector<std::string>{"w1"});
  EXPECT_THAT(::testing::PrintToString(result->notes), HasSubstr("channels reach graph output 'probs'"));
}

TEST(OnnxOutputHeads, AHiddenLayerThatIsAlsoAnOutputIsAHead) {
  GraphBuilder g;
  g.Input("x", {1, 8}).Output("y", {1, 4}).Output("h", {1, 6});
  g.Weight("w1", {8, 6}, 1).Weight("w2", {6, 4}, 2);
  g.Node("MatMul", {"x", "w1"}, {"h"});
  g.Node("MatMul", {"h", "w2"}, {"y"});
  formats::OnnxGraphIndex index(*g.model().mutable_graph());
  const auto heads = formats::WeightsReachingGraphOutputs(index);
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_TRUE(heads.contains("w1") && heads.contains("w2"));
}

// One pass over the graph: a deep stack answers like a shallow one.
TEST(OnnxOutputHeads, InADeepStackOnlyTheLastLayerAndWhatBypassesTheRestAreHeads) {
  GraphBuilder g;
  constexpr int kLayers = 3000;
  g.Input("x0", {1, 4}).Output("y", {1, 4});
  std::string x = "x0";
  for (int i = 0; i < kLayers; ++i) {
    const std::string w = "w" + std::to_string(i), h = "h" + std::to_string(i);
    g.Weight(w, {4, 4}, i);
    g.Node("MatMul", {x, w}, {h});
    x = h;
  }
  // A skip connection from the first layer to the output, past all others.
  g.Node("Add", {x, "h0"}, {"y"});
  formats::OnnxGraphIndex index(*g.model().mutable_graph());
  const auto heads = formats::WeightsReachingGraphOutputs(index);
  EXPECT_EQ(heads.size(), 2u);
  EXPECT_TRUE(heads.contains("w0"));
  EXPECT_TRUE(heads.contains("w" + std::to_string(kLayers - 1)));
}

}  // namespace
}  // namespace bonsai::surgery
