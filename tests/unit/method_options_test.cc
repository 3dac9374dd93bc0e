// The per-method option messages: each one reaches its method's config, no
// other is read, and GetCapabilities lists exactly the fields the proto has.
#include "server/engine/method_options.h"

#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"

namespace bonsai::engine {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;

methods::MethodConfig Config(const std::string& method, const v1::MethodOptions& options) {
  return ToMethodConfig(method, 0.5, v1::SCOPE_LAYER, options);
}

TEST(MethodOptions, NmAndStructuredOptionsReachTheirConfig) {
  v1::MethodOptions nm;
  nm.mutable_nm()->set_n(2);
  nm.mutable_nm()->set_m(4);
  EXPECT_EQ(Config("nm", nm).n, 2);
  EXPECT_EQ(Config("nm", nm).m, 4);

  v1::MethodOptions structured;
  structured.mutable_structured()->set_norm(v1::NORM_L1);
  structured.mutable_structured()->set_mode(v1::STRUCTURED_MODE_PHYSICAL);
  EXPECT_EQ(Config("structured", structured).norm, methods::NormKind::kL1);
  EXPECT_EQ(Config("structured", structured).structured_mode, methods::StructuredMode::kPhysical);
}

TEST(MethodOptions, CalibratedMethodsOptionsReachTheirConfig) {
  v1::MethodOptions wanda;
  wanda.mutable_wanda()->mutable_nm()->set_n(4);
  wanda.mutable_wanda()->mutable_nm()->set_m(8);
  EXPECT_EQ(Config("wanda", wanda).n, 4);
  EXPECT_EQ(Config("wanda", wanda).m, 8);

  v1::MethodOptions sparsegpt;
  v1::SparseGptOptions* s = sparsegpt.mutable_sparsegpt();
  s->set_block_size(32);
  s->set_dampening(0.25f);
  s->mutable_nm()->set_n(2);
  s->mutable_nm()->set_m(4);
  s->mutable_quant()->set_bits(3);
  s->mutable_quant()->set_group_size(0);
  s->mutable_quant()->set_symmetric(true);
  methods::MethodConfig config = Config("sparsegpt", sparsegpt);
  EXPECT_EQ(config.block_size, 32);
  EXPECT_EQ(config.dampening, 0.25);
  EXPECT_EQ(config.n, 2);
  EXPECT_EQ(config.m, 4);
  EXPECT_EQ(config.bits, 3);
  EXPECT_EQ(config.group_size, 0);
  EXPECT_TRUE(config.symmetric);

  v1::MethodOptions gptq;
  gptq.mutable_gptq()->mutable_quant()->set_bits(2);
  gptq.mutable_gptq()->mutable_quant()->set_group_size(16);
  gptq.mutable_gptq()->set_block_size(64);
  gptq.mutable_gptq()->set_dampening(0.5f);
  gptq.mutable_gptq()->set_act_order(true);
  config = Config("gptq", gptq);
  EXPECT_EQ(config.bits, 2);
  EXPECT_EQ(config.group_size, 16);
  EXPECT_FALSE(config.symmetric);
  EXPECT_EQ(config.block_size, 64);
  EXPECT_EQ(config.dampening, 0.5);
  EXPECT_TRUE(config.act_order);
}

TEST(MethodOptions, QuantizationOptionsReachTheirConfig) {
  v1::MethodOptions rtn;
  rtn.mutable_rtn()->set_bits(8);
  rtn.mutable_rtn()->set_group_size(64);
  rtn.mutable_rtn()->set_symmetric(true);
  methods::MethodConfig config = Config("rtn", rtn);
  EXPECT_EQ(config.bits, 8);
  EXPECT_EQ(config.group_size, 64);
  EXPECT_TRUE(config.symmetric);

  v1::MethodOptions ternarize;
  ternarize.mutable_ternarize()->set_per_channel(true);
  EXPECT_TRUE(Config("ternarize", ternarize).per_channel);
}

TEST(MethodOptions, UnsetOrZeroOptionsKeepTheMethodsDefaults) {
  const methods::MethodConfig defaults;
  v1::MethodOptions zeros;  // present, every field 0: the proto3 defaults
  zeros.mutable_gptq()->mutable_quant();
  for (const v1::MethodOptions& options : {v1::MethodOptions(), zeros}) {
    methods::MethodConfig config = Config("gptq", options);
    EXPECT_EQ(config.bits, 0);  // the method's own default (4)
    EXPECT_EQ(config.group_size, defaults.group_size);
    EXPECT_EQ(config.block_size, defaults.block_size);
    EXPECT_EQ(config.dampening, defaults.dampening);
    EXPECT_FALSE(config.act_order);
  }
}

TEST(MethodOptions, AnotherMethodsMessageIsNotRead) {
  v1::MethodOptions options;
  options.mutable_sparsegpt()->mutable_nm()->set_n(2);
  options.mutable_sparsegpt()->mutable_nm()->set_m(4);
  EXPECT_EQ(Config("nm", options).n, 0);
  EXPECT_EQ(Config("wanda", options).m, 0);
  EXPECT_THAT(CheckOptionsBelongToMethod("wanda", options, "").message(),
              ::testing::HasSubstr("its own go in options.wanda (WandaOptions)"));
}

TEST(MethodOptions, AnUnknownMethodIsLeftToTheMethodCheck) {
  v1::MethodOptions options;
  options.mutable_rtn()->set_bits(4);
  EXPECT_TRUE(CheckOptionsBelongToMethod("rtm", options, "").ok());
}

// Every scalar field below `message`, by its path from `prefix`.
void LeafPaths(const Descriptor* message, const std::string& prefix, std::set<std::string>& paths) {
  for (int i = 0; i < message->field_count(); ++i) {
    const FieldDescriptor* field = message->field(i);
    const std::string path = absl::StrCat(prefix, ".", field->name());
    if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
      LeafPaths(field->message_type(), path, paths);
    } else {
      paths.insert(path);
    }
  }
}

TEST(MethodOptions, CapabilitiesListExactlyTheFieldsOfEachMethodsMessage) {
  const Descriptor* options = v1::MethodOptions::descriptor();
  std::set<std::string> messages_with_a_method;
  for (const methods::MethodDescription& method : methods::DescribeMethods()) {
    std::set<std::string> listed, fields;
    for (const auto& parameter : method.parameters) {
      if (absl::StartsWith(parameter.name, "options.")) listed.insert(parameter.name);
    }
    if (const FieldDescriptor* own = options->FindFieldByName(method.name)) {
      LeafPaths(own->message_type(), absl::StrCat("options.", own->name()), fields);
      messages_with_a_method.insert(own->name());
    }
    EXPECT_EQ(listed, fields) << method.name;
  }
  for (int i = 0; i < options->field_count(); ++i) {
    EXPECT_TRUE(messages_with_a_method.contains(options->field(i)->name()))
        << "options." << options->field(i)->name() << " names no method of the registry";
  }
}

}  // namespace
}  // namespace bonsai::engine
