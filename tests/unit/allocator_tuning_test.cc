#include "server/storage/allocator_tuning.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace bonsai::storage {
namespace {

// The VmFlags line of the mapping that holds `address`, from /proc/self/smaps.
std::string VmFlagsOf(const void* address) {
  const auto target = reinterpret_cast<uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t begin = 0, end = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> begin >> dash >> end && dash == '-') {
      inside = begin <= target && target < end;
    } else if (inside && line.rfind("VmFlags:", 0) == 0) {
      return line;
    }
  }
  return "";
}

TEST(ResizeForOverwriteTest, ReusesTheBufferForTensorsThatFit) {
  std::vector<float> values;
  ResizeForOverwrite(values, 3 << 20);
  const float* first = values.data();
  values[0] = 1.0f;
  ResizeForOverwrite(values, 1 << 20);
  EXPECT_EQ(values.size(), 1u << 20);
  EXPECT_EQ(values.data(), first) << "a smaller tensor must not reallocate (and fault again)";
  ResizeForOverwrite(values, 3 << 20);
  EXPECT_EQ(values.data(), first);
  ResizeForOverwrite(values, 4 << 20);
  EXPECT_EQ(values.size(), 4u << 20);
}

TEST(ResizeForOverwriteTest, AdvisesHugePagesForBigBuffers) {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp) GTEST_SKIP() << "this kernel has no transparent huge pages";
  std::string bytes;
  ResizeForOverwrite(bytes, 64 << 20);
  EXPECT_NE(VmFlagsOf(bytes.data() + (32 << 20)).find(" hg"), std::string::npos)
      << "the 64 MiB buffer's mapping is not advised MADV_HUGEPAGE: "
      << VmFlagsOf(bytes.data() + (32 << 20));
}

}  // namespace
}  // namespace bonsai::storage
