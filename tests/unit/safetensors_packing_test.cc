#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "server/formats/in_memory.h"
#include "server/formats/safetensors.h"
#include "server/formats/safetensors_header.h"
#include "tests/unit/formats_test_util.h"
#include "tests/unit/packing_samples.h"

namespace bonsai::formats {
namespace {

using json = nlohmann::json;
using test_util::CompressSample;
using test_util::SampleSafetensors;
using test_util::SafetensorsFile;

using test_util::Outputs;

Outputs CompressBothWays(const std::string& input) {
  auto out = test_util::CompressSafetensorsBothWays(input);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : Outputs();
}

// The parts of a packed file, by name.
struct Packed {
  std::string file;
  SafetensorsHeader header;
  const SafetensorsEntry* Find(const std::string& name) const {
    for (const auto& entry : header.entries) {
      if (entry.name == name) return &entry;
    }
    return nullptr;
  }
  const unsigned char* Data(const std::string& name) const {
    return reinterpret_cast<const unsigned char*>(file.data()) + header.data_start +
           Find(name)->begin;
  }
  json Description(const std::string& name) const {
    return json::parse(header.metadata["bonsai.packed." + name].get<std::string>());
  }
};

Packed Open(const std::string& file) {
  auto header = ParseSafetensorsHeader(file);
  EXPECT_TRUE(header.ok()) << header.status();
  return {file, *header};
}

std::vector<float> DenseValues(const std::string& file, const std::string& name) {
  auto model = ParseSafetensors(file);
  for (size_t i = 0; i < (*model)->tensors().size(); ++i) {
    if ((*model)->tensors()[i].name == name) return (*model)->Read(i)->values;
  }
  return {};
}

TEST(SafetensorsPackingTest, PackedOutputReplacesTensorsByTheirParts) {
  const Outputs out = CompressBothWays(SampleSafetensors());
  const Packed packed = Open(out.packed);
  for (const char* part : {"sparse.weight.bitmask", "sparse.weight.values",
                           "sparse_bf16.weight.bitmask", "nm.weight.values", "nm.weight.indices",
                           "nm.weight.tail", "nm3d.weight.values", "binary.weight.signs",
                           "binary.weight.scales", "ternary.weight.codes", "ternary.weight.scales",
                           "barely_sparse.weight", "norm.weight"}) {
    EXPECT_NE(packed.Find(part), nullptr) << part;
  }
  for (const char* gone : {"sparse.weight", "nm.weight", "binary.weight", "ternary.weight"}) {
    EXPECT_EQ(packed.Find(gone), nullptr) << gone;
  }
  EXPECT_EQ(packed.Find("nm3d.weight.tail"), nullptr);  // 8 is a multiple of 4
  EXPECT_EQ(packed.header.metadata["format"], "pt");
  EXPECT_EQ(packed.header.metadata["bonsai.packing"], "1");
  const json nm = packed.Description("nm.weight");
  EXPECT_EQ(nm["encoding"], "nm");
  EXPECT_EQ(nm["dtype"], "F16");
  EXPECT_EQ(nm["shape"], json({3, 10}));
  EXPECT_EQ(nm["axis"], 1);
  EXPECT_EQ(nm["n"], 2);
  EXPECT_EQ(nm["m"], 4);
  EXPECT_EQ(packed.header.data_start % 8, 0u);
}

TEST(SafetensorsPackingTest, StoredSizesReportPackedBytes) {
  const Outputs out = CompressBothWays(SampleSafetensors());
  ASSERT_EQ(out.sizes.size(), out.names.size());
  for (size_t i = 0; i < out.names.size(); ++i) {
    const StoredSize& size = out.sizes[i];
    if (out.names[i] == "sparse.weight") {
      EXPECT_EQ(size.dense_bytes, 512u);
      EXPECT_EQ(size.stored_bytes, 16u + 32u * 4u);
    } else if (out.names[i] == "binary.weight") {
      EXPECT_EQ(size.stored_bytes, 4u + 4u * 4u);
    } else if (out.names[i] == "barely_sparse.weight" || out.names[i] == "norm.weight") {
      EXPECT_EQ(size.stored_bytes, size.dense_bytes);
    } else {
      EXPECT_LT(size.stored_bytes, size.dense_bytes) << out.names[i];
    }
  }
}

TEST(SafetensorsPackingTest, BitmaskHoldsExactlyTheNonZeroElements) {
  const Outputs out = CompressBothWays(SampleSafetensors());
  const Packed packed = Open(out.packed);
  const std::vector<float> dense = DenseValues(out.dense, "sparse.weight");
  const unsigned char* mask = packed.Data("sparse.weight.bitmask");
  const unsigned char* values = packed.Data("sparse.weight.values");
  size_t next = 0;
  for (size_t i = 0; i < dense.size(); ++i) {
    const bool set = (mask[i / 8] >> (i % 8)) & 1;
    EXPECT_EQ(set, dense[i] != 0.0f) << i;
    if (!set) continue;
    float value;
    std::memcpy(&value, values + 4 * next++, 4);
    EXPECT_EQ(value, dense[i]);
  }
  EXPECT_EQ(packed.Find("sparse.weight.values")->count, next);
  // -0.0 is kept as a value so that unpacking is bit-exact.
  EXPECT_EQ(packed.Data("sparse_bf16.weight.bitmask")[0] & 1, 1);
}

TEST(SafetensorsPackingTest, BinaryIsSignBitsAndPerChannelScales) {
  const Outputs out = CompressBothWays(SampleSafetensors());
  const Packed packed = Open(out.packed);
  const std::vector<float> dense = DenseValues(out.dense, "binary.weight");
  const unsigned char* signs = packed.Data("binary.weight.signs");
  std::vector<float> scales(4);
  std::memcpy(scales.data(), packed.Data("binary.weight.scales"), 16);
  for (size_t i = 0; i < dense.size(); ++i) {
    const bool negative = (signs[i / 8] >> (i % 8)) & 1;
    EXPECT_EQ(negative ? -scales[i / 8] : scales[i / 8], dense[i]) << i;
  }
}

TEST(SafetensorsPackingTest, NMKeepsInGroupIndicesAndDenseTail) {
  const Outputs out = CompressBothWays(SampleSafetensors());
  const Packed packed = Open(out.packed);
  const std::vector<float> dense = DenseValues(out.dense, "nm.weight");  // [3, 10], F16
  const unsigned char* indices = packed.Data("nm.weight.indices");
  const unsigned char* values = packed.Data("nm.weight.values");
  const unsigned char* tail = packed.Data("nm.weight.tail");
  for (int row = 0; row < 3; ++row) {
    std::vector<float> rebuilt(10, 0.0f);
    for (int slot = 0; slot < 4; ++slot) {  // 2 groups x 2 kept
      const int k = (slot / 2) * 4 + indices[row * 4 + slot];
      uint16_t half;
      std::memcpy(&half, values + 2 * (row * 4 + slot), 2);
      rebuilt[k] = tensor::HalfToFloat(half);
    }
    for (int k = 8; k < 10; ++k) {
      uint16_t half;
      std::memcpy(&half, tail + 2 * (row * 2 + (k - 8)), 2);
      rebuilt[k] = tensor::HalfToFloat(half);
    }
    for (int k = 0; k < 10; ++k) EXPECT_EQ(rebuilt[k], dense[row * 10 + k]) << row << "," << k;
  }
}

TEST(SafetensorsPackingTest, NothingToPackGivesTheDenseBytes) {
  const std::string input = SampleSafetensors();
  auto model = ParseSafetensors(input);
  for (size_t i = 0; i < (*model)->tensors().size(); ++i) {
    auto values = (*model)->Read(i);
    ASSERT_TRUE((*model)->Write(i, *values, {Packing::kSparseBitmask}).ok());  // nothing is zero
  }
  auto out = (*model)->Serialize({/*packed=*/true});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(*out, input);
}

TEST(SafetensorsPackingTest, ValuesNotMatchingTheirHintStayDense) {
  auto model = ParseSafetensors(SafetensorsFile({{"w", "F32", {2, 8}, test_util::Noise(16, 9)}}));
  auto values = (*model)->Read(0);
  ASSERT_TRUE((*model)->Write(0, *values, {Packing::kNM, 2, 4, {}}).ok());  // 4 of 4 kept
  auto out = (*model)->Serialize({true});
  ASSERT_TRUE(out.ok());
  EXPECT_NE(Open(*out).Find("w"), nullptr);
  EXPECT_EQ((*model)->stored_sizes()[0].stored_bytes, 64u);
}

TEST(SafetensorsPackingTest, PackedOutputIsDeterministic) {
  EXPECT_EQ(CompressBothWays(SampleSafetensors()).packed,
            CompressBothWays(SampleSafetensors()).packed);
}

}  // namespace
}  // namespace bonsai::formats
