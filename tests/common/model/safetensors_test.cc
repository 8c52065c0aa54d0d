#include "common/model/safetensors.h"

#include <cstring>
#include <random>
#include <string>

#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/model/test_env.h"

namespace rlhf::model {
namespace {

using ::testing::HasSubstr;

// A file from a raw header text and a data buffer.
std::string MakeFile(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

bool SameBytes(const at::Tensor& a, const at::Tensor& b) {
  // An empty tensor may have no storage at all: memcmp must not see its null pointer (UBSan), even for 0 bytes.
  const size_t bytes = static_cast<size_t>(a.numel()) * a.element_size();
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         (bytes == 0 || std::memcmp(a.contiguous().data_ptr(), b.contiguous().data_ptr(), bytes) == 0);
}

std::map<std::string, at::Tensor> SampleTensors() {
  at::manual_seed(7);
  std::map<std::string, at::Tensor> t;
  t["b.f32"] = at::randn({3, 5});
  t["a.f16"] = at::randn({4}).to(at::kHalf);
  t["c.bf16"] = at::randn({2, 2, 2}).to(at::kBFloat16);
  t["d.i64"] = at::randint(-1000000, 1000000, {6}, at::kLong);
  t["e.i32"] = at::randint(-1000, 1000, {2, 3}, at::kInt);
  t["f.empty"] = at::randn({0, 4});
  t["g.transposed"] = at::randn({4, 3}).t();  // non-contiguous input
  return t;
}

TEST(Safetensors, SaveThenLoadIsBitExact) {
  const std::string dir = testing::MakeTempDir();
  const std::string path = dir + "/t.safetensors";
  const auto tensors = SampleTensors();
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"step", "12"}}).ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->metadata().at("step"), "12");
  ASSERT_EQ((*file)->Names().size(), tensors.size());
  for (const auto& [name, tensor] : tensors) {
    auto loaded = (*file)->Get(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(SameBytes(*loaded, tensor)) << name;
  }
  // Saving what was loaded gives the same bytes: names and data are written in sorted order.
  auto again = SerializeSafetensors(tensors, {{"format", "pt"}, {"step", "12"}});
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *util::ReadFile(path));
}

TEST(Safetensors, DataIsLaidOutInNameOrder) {
  auto bytes = SerializeSafetensors(SampleTensors());
  ASSERT_TRUE(bytes.ok());
  auto file = SafetensorsFile::Parse(*bytes, "mem");
  ASSERT_TRUE(file.ok());
  uint64_t previous_end = 0;
  for (const std::string& name : (*file)->Names()) {
    const SafetensorsEntry e = *(*file)->Entry(name);
    EXPECT_EQ(e.begin, previous_end) << name;
    previous_end = e.end;
  }
}

TEST(Safetensors, GetConvertsToFloat32AndInt64WhenAsked) {
  auto bytes = SerializeSafetensors(SampleTensors());
  auto file = SafetensorsFile::Parse(*bytes, "mem");
  ASSERT_TRUE(file.ok());
  SafetensorsGetOptions to_float;
  to_float.conversion = SafetensorsConversion::kFloat32;
  auto half = (*file)->Get("a.f16", to_float);
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(half->scalar_type(), at::kFloat);
  EXPECT_TRUE(half->equal(SampleTensors()["a.f16"].to(at::kFloat)));
  auto bf16 = (*file)->Get("c.bf16", to_float);
  ASSERT_TRUE(bf16.ok());
  EXPECT_TRUE(bf16->equal(SampleTensors()["c.bf16"].to(at::kFloat)));
  SafetensorsGetOptions to_long;
  to_long.conversion = SafetensorsConversion::kInt64;
  auto ints = (*file)->Get("e.i32", to_long);
  ASSERT_TRUE(ints.ok());
  EXPECT_EQ(ints->scalar_type(), at::kLong);
  auto wrong = (*file)->Get("b.f32", to_long);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("tensor 'b.f32' has dtype F32, expected an integer dtype"));
}

TEST(Safetensors, OpenFailsWithNotFoundWhenFileIsMissing) {
  auto file = SafetensorsFile::Open("/nonexistent/x.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr("/nonexistent/x.safetensors"));
}

TEST(Safetensors, ParseFailsWhenFileIsTruncated) {
  auto bytes = SerializeSafetensors(SampleTensors());
  auto tiny = SafetensorsFile::Parse(bytes->substr(0, 5), "cut.safetensors");
  EXPECT_EQ(tiny.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tiny.status().message(), HasSubstr("cut.safetensors: truncated file: 5 bytes"));
  auto header_cut = SafetensorsFile::Parse(bytes->substr(0, 40), "cut.safetensors");
  EXPECT_EQ(header_cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(header_cut.status().message(), HasSubstr("goes beyond the end of the file"));
  auto data_cut = SafetensorsFile::Parse(bytes->substr(0, bytes->size() - 3), "cut.safetensors");
  EXPECT_EQ(data_cut.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(data_cut.status().message(), HasSubstr("out of range of the data buffer"));
}

TEST(Safetensors, ParseFailsWhenHeaderIsBadJson) {
  auto file = SafetensorsFile::Parse(MakeFile("{\"a\": [1,", ""), "bad.safetensors");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("bad.safetensors: bad JSON header"));
}

TEST(Safetensors, ParseFailsWhenOffsetsAreOutOfRange) {
  auto file = SafetensorsFile::Parse(
      MakeFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", std::string(8, '\0')), "f");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("tensor 'w': data_offsets [0, 16] out of range"));
}

TEST(Safetensors, ParseFailsWhenTensorsOverlap) {
  auto file = SafetensorsFile::Parse(MakeFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                              std::string(12, '\0')),
                                     "f");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("tensor 'b' data_offsets [4, 12] overlap tensor 'a'"));
}

TEST(Safetensors, ParseFailsWhenSizeDoesNotMatchShapeAndDtype) {
  auto file = SafetensorsFile::Parse(
      MakeFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "f");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("tensor 'w': data_offsets [0, 8] hold 8 bytes but shape [3]"));
}

TEST(Safetensors, ParseFailsWhenDtypeIsUnknown) {
  auto file = SafetensorsFile::Parse(
      MakeFile(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,1]}})", std::string(1, '\0')), "f");
  EXPECT_EQ(file.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(file.status().message(), HasSubstr("tensor 'w': unknown dtype \"Q4\""));
}

TEST(Safetensors, ParseFailsWhenBufferHasHoleOrTrailingBytes) {
  auto hole = SafetensorsFile::Parse(
      MakeFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')), "f");
  EXPECT_THAT(hole.status().message(), HasSubstr("hole in the data buffer at bytes [0, 4)"));
  auto trailing = SafetensorsFile::Parse(
      MakeFile(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", std::string(8, '\0')), "f");
  EXPECT_THAT(trailing.status().message(), HasSubstr("data buffer has 8 bytes but the tensors cover 4"));
}

TEST(Safetensors, GetFailsWhenTensorIsMissingOrShapeDiffers) {
  auto bytes = SerializeSafetensors(SampleTensors());
  auto file = SafetensorsFile::Parse(*bytes, "model.safetensors");
  ASSERT_TRUE(file.ok());
  auto missing = (*file)->Get("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("model.safetensors: tensor 'nope' not found"));
  SafetensorsGetOptions shaped;
  shaped.expected_shape = std::vector<int64_t>{5, 3};
  auto wrong = (*file)->Get("b.f32", shaped);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong.status().message(), HasSubstr("tensor 'b.f32' has shape [3,5], expected [5,3]"));
}

// Bounded fuzzing: random mutations and truncations of a valid file must give errors or valid tensors, never a
// crash, hang or exception.
TEST(Safetensors, ParseSurvivesRandomMutations) {
  auto valid = SerializeSafetensors(SampleTensors(), {{"format", "pt"}});
  ASSERT_TRUE(valid.ok());
  std::mt19937_64 rng(20240601);
  auto pick = [&](uint64_t n) { return n == 0 ? 0 : rng() % n; };
  int parsed = 0;
  constexpr int kIterations = 4000;
  for (int it = 0; it < kIterations; ++it) {
    std::string bytes = *valid;
    const int kind = static_cast<int>(pick(6));
    const uint64_t header_end = 8 + [&] {
      uint64_t n;
      std::memcpy(&n, valid->data(), 8);
      return n;
    }();
    if (kind == 0) {  // truncate anywhere
      bytes.resize(pick(bytes.size()));
    } else if (kind == 1) {  // random bytes anywhere
      for (int k = 0, n = 1 + static_cast<int>(pick(8)); k < n; ++k) bytes[pick(bytes.size())] = char(rng());
    } else if (kind == 2) {  // random bytes inside the header
      for (int k = 0, n = 1 + static_cast<int>(pick(4)); k < n; ++k) bytes[8 + pick(header_end - 8)] = char(rng());
    } else if (kind == 3) {  // digits inside the header changed (shapes and offsets)
      for (int k = 0; k < 3; ++k) {
        const uint64_t pos = 8 + pick(header_end - 8);
        if (bytes[pos] >= '0' && bytes[pos] <= '9') bytes[pos] = static_cast<char>('0' + pick(10));
      }
    } else if (kind == 4) {  // header length field
      uint64_t n = rng();
      if (rng() % 2) n = header_end - 8 + (static_cast<int64_t>(pick(16)) - 8);
      std::memcpy(bytes.data(), &n, 8);
    } else {  // bytes inserted or erased inside the header
      const uint64_t pos = 8 + pick(header_end - 8);
      if (rng() % 2) {
        bytes.insert(pos, 1 + pick(3), static_cast<char>(rng()));
      } else {
        bytes.erase(pos, 1 + pick(3));
      }
    }
    auto file = SafetensorsFile::Parse(std::move(bytes), "fuzz");
    if (!file.ok()) {
      EXPECT_NE(file.status().code(), absl::StatusCode::kOk);
      continue;
    }
    ++parsed;
    for (const std::string& name : (*file)->Names()) {
      SafetensorsGetOptions options;
      for (SafetensorsConversion c : {SafetensorsConversion::kAsStored, SafetensorsConversion::kFloat32,
                                      SafetensorsConversion::kInt64}) {
        options.conversion = c;
        auto t = (*file)->Get(name, options);
        if (t.ok()) {
          EXPECT_TRUE(t->defined());
        }
      }
    }
  }
  // Most mutations are caught; some (data bytes) leave a valid file.
  EXPECT_GT(parsed, 0);
  EXPECT_LT(parsed, kIterations);
}

}  // namespace
}  // namespace rlhf::model
