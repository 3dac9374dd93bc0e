// The seam between the quantizers and the packed layouts: the grids a method
// hands over must give back every dense value from an integer code, and the
// layouts put each code where the runtimes' own definitions say.
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/formats/onnx_quantized.h"
#include "server/formats/quant_codes.h"
#include "server/formats/safetensors_quantized.h"
#include "server/methods/method.h"
#include "tests/unit/method_test_util.h"

namespace bonsai {
namespace {

using ::testing::HasSubstr;
using methods::testing::OwnedWeight;
using methods::testing::RandomNormal;

formats::PackingHint RtnHint(OwnedWeight& w, int bits, int64_t group_size, bool symmetric = false) {
  methods::MethodConfig config;
  config.method = "rtn";
  config.bits = bits;
  config.group_size = group_size;
  config.symmetric = symmetric;
  auto method = methods::CreateMethod(config);
  EXPECT_TRUE(method.ok());
  auto outcome = (*method)->Apply(w.view(), nullptr);
  EXPECT_TRUE(outcome.ok()) << outcome.status();
  return outcome->packing;
}

uint32_t Word(const std::string& bytes, int64_t index) {
  uint32_t word;
  std::memcpy(&word, bytes.data() + index * 4, 4);
  return word;
}

TEST(QuantizedPackingTest, RtnHandsOverOneGridPerRowAndGroupThatGivesBackEveryValue) {
  for (bool symmetric : {false, true}) {
    for (int bits : {2, 3, 4, 8}) {
      OwnedWeight w("fc", {6, 40}, RandomNormal(240, 7), formats::WeightLayout{0, 1});
      const formats::PackingHint hint = RtnHint(w, bits, 16, symmetric);
      ASSERT_EQ(hint.packing, formats::Packing::kQuantized);
      ASSERT_NE(hint.quant, nullptr);
      EXPECT_EQ(hint.quant->rows, 6);
      EXPECT_EQ(hint.quant->groups, 3);  // 16 + 16 + 8
      EXPECT_EQ(hint.quant->group_columns, 16);
      auto m = formats::QuantizedCodes("fc", w.info.shape, *w.info.layout, w.values.span(), *hint.quant);
      ASSERT_TRUE(m.ok()) << m.status();
      for (int64_t r = 0; r < 6; ++r) {
        for (int64_t c = 0; c < 40; ++c) {
          const float step = static_cast<float>(m->codes[r * 40 + c]) -
                             static_cast<float>(m->zero(r, c / 16));
          EXPECT_EQ(m->scale(r, c / 16) * step, w.values.values[r * 40 + c]);
        }
      }
    }
  }
}

TEST(QuantizedPackingTest, AValueOffItsGridIsRefusedNamingTheTensor) {
  OwnedWeight w("fc", {2, 32}, RandomNormal(64, 3), formats::WeightLayout{0, 1});
  const formats::PackingHint hint = RtnHint(w, 4, 32);
  w.values.values[5] += 1e-3f;
  auto m = formats::QuantizedCodes("fc", w.info.shape, *w.info.layout, w.values.span(), *hint.quant);
  ASSERT_FALSE(m.ok());
  EXPECT_THAT(m.status().message(), HasSubstr("\"fc\""));
  EXPECT_THAT(m.status().message(), HasSubstr("not on its quantization grid"));
}

TEST(QuantizedPackingTest, PackQuantizedPutsCodeJOfARowAtBitsJTimesBitsOfItsWord) {
  OwnedWeight w("fc.weight", {3, 20}, RandomNormal(60, 5), formats::WeightLayout{0, 1});
  const formats::PackingHint hint = RtnHint(w, 4, 0);
  formats::SafetensorsEntry entry;
  entry.name = "fc.weight";
  entry.shape = {3, 20};
  entry.dtype_name = "F32";
  auto packed = formats::PackQuantizedSafetensor(entry, w.info.layout, w.values.span(), *hint.quant,
                                                 formats::QuantLayout::kCompressedTensors);
  ASSERT_TRUE(packed.ok()) << packed.status();
  ASSERT_EQ(packed->parts.size(), 4u);
  EXPECT_EQ(packed->parts[0].NameFor("fc.weight"), "fc.weight_packed");
  EXPECT_EQ(packed->parts[0].shape, (std::vector<int64_t>{3, 3}));   // ceil(20 / 8)
  EXPECT_EQ(packed->parts[2].shape, (std::vector<int64_t>{1, 1}));   // zero points, ceil(3 / 8)
  float scale[3];
  std::memcpy(scale, packed->parts[1].bytes.data(), sizeof scale);
  const uint32_t zeros = Word(packed->parts[2].bytes, 0);
  for (int64_t r = 0; r < 3; ++r) {
    const float zero = static_cast<float>((zeros >> (4 * r)) & 0xF);
    for (int64_t c = 0; c < 20; ++c) {
      const uint32_t code = (Word(packed->parts[0].bytes, r * 3 + c / 8) >> (4 * (c % 8))) & 0xF;
      EXPECT_EQ(scale[r] * (static_cast<float>(code) - zero), w.values.values[r * 20 + c]);
    }
  }
}

TEST(QuantizedPackingTest, MatMulNBitsPutsTheLowerInputRowInTheLowNibble) {
  // A MatMul weight [K=16, N=2]: output channel n is column n.
  const std::vector<float> values = RandomNormal(32, 9);
  OwnedWeight w("B", {16, 2}, values, formats::WeightLayout{1, 0});
  w.info.role = "MatMul.B";
  const formats::PackingHint hint = RtnHint(w, 4, 16);
  auto form = formats::QuantizeOnnxWeight(w.info, w.values.span(), *hint.quant, 13);
  ASSERT_TRUE(form.ok()) << form.status();
  ASSERT_TRUE(form->matmul_nbits);
  EXPECT_EQ(form->k, 16);
  EXPECT_EQ(form->n, 2);
  EXPECT_EQ(form->block_size, 16);
  const std::string& b = form->initializers[0].raw_data();
  const std::string& scales = form->initializers[1].raw_data();
  const std::string& zeros = form->initializers[2].raw_data();
  ASSERT_EQ(b.size(), 2u * 1 * 8);
  for (int n = 0; n < 2; ++n) {
    float scale;
    std::memcpy(&scale, scales.data() + n * 4, 4);
    const float zero = static_cast<float>(static_cast<uint8_t>(zeros[n]) & 0xF);
    for (int k = 0; k < 16; ++k) {
      const uint8_t byte = static_cast<uint8_t>(b[n * 8 + k / 2]);
      const float code = static_cast<float>(k % 2 == 0 ? byte & 0xF : byte >> 4);
      EXPECT_EQ(scale * (code - zero), w.values.values[k * 2 + n]) << n << " " << k;
    }
  }
}

TEST(QuantizedPackingTest, FourBitPackingOfAConvIsRefusedNamingMatMulNBits) {
  formats::TensorInfo info;
  info.name = "conv";
  info.shape = {4, 2, 3, 3};
  info.dtype = tensor::DType::kF32;
  info.params = 72;
  info.role = "Conv.W";
  info.layout = formats::WeightLayout{0, 1};
  const absl::Status status = formats::CheckOnnxQuantizedPacking(info, 4, 0, 13);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("MatMulNBits"));
  EXPECT_THAT(status.message(), HasSubstr("bits 8"));
  EXPECT_TRUE(formats::CheckOnnxQuantizedPacking(info, 8, 0, 13).ok());
  EXPECT_FALSE(formats::CheckOnnxQuantizedPacking(info, 8, 8, 21).ok());
  EXPECT_FALSE(formats::CheckOnnxQuantizedPacking(info, 3, 0, 21).ok());
  EXPECT_FALSE(formats::CheckOnnxQuantizedPacking(info, 8, 0, 11).ok());
}

}  // namespace
}  // namespace bonsai
