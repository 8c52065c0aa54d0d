#include "common/tokenizer/byte_tokenizer.h"

#include <string>
#include <vector>

#include "absl/random/random.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::unique_ptr<ByteTokenizer> Default() { return *ByteTokenizer::Create(); }

TEST(ByteTokenizer, DefaultsToEndOfTextAndPadAfterTheBytes) {
  const std::unique_ptr<ByteTokenizer> tokenizer = Default();
  EXPECT_EQ(tokenizer->VocabSize(), 258);
  EXPECT_EQ(tokenizer->EosId(), 256);
  EXPECT_EQ(tokenizer->PadId(), 257);
  EXPECT_EQ(tokenizer->Kind(), "byte");
}

TEST(ByteTokenizer, RoundTripsEveryByteIncludingInvalidUtf8) {
  const std::unique_ptr<ByteTokenizer> tokenizer = Default();
  std::string all_bytes;
  for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
  const std::vector<int32_t> ids = *tokenizer->Encode(all_bytes);
  ASSERT_EQ(ids.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(ids[b], b);
  EXPECT_EQ(*tokenizer->Decode(ids), all_bytes);

  absl::BitGen gen(std::seed_seq{11});
  for (int trial = 0; trial < 200; ++trial) {
    std::string text(absl::Uniform(gen, 0, 100), '\0');
    for (char& c : text) c = static_cast<char>(absl::Uniform(gen, 0, 256));
    EXPECT_EQ(*tokenizer->Decode(*tokenizer->Encode(text)), text);
    EXPECT_EQ(*tokenizer->Decode(*tokenizer->EncodeOrdinary(text)), text);
  }
}

TEST(ByteTokenizer, EncodesSpecialTokensInText) {
  const std::unique_ptr<ByteTokenizer> tokenizer = Default();
  EXPECT_THAT(*tokenizer->Encode("hi<|endoftext|><|pad|>"), ElementsAre('h', 'i', 256, 257));
  EXPECT_EQ(*tokenizer->Decode({'h', 'i', 256, 257}), "hi<|endoftext|><|pad|>");
  EXPECT_EQ(tokenizer->EncodeOrdinary("<|pad|>")->size(), 7u);
}

TEST(ByteTokenizer, PrefersTheLongestSpecialTokenAtAPosition) {
  ByteTokenizerOptions options;
  options.special_tokens = {"ab", "abc"};
  options.eos_token = "ab";
  options.pad_token = std::nullopt;
  const std::unique_ptr<ByteTokenizer> tokenizer = *ByteTokenizer::Create(options);
  EXPECT_THAT(*tokenizer->Encode("xabcab"), ElementsAre('x', 257, 256));
  EXPECT_EQ(tokenizer->PadId(), std::nullopt);
}

TEST(ByteTokenizer, DecodeRejectsOutOfRangeIdsNamingIndexAndValue) {
  const std::unique_ptr<ByteTokenizer> tokenizer = Default();
  const absl::StatusOr<std::string> text = tokenizer->Decode({65, 66, 258});
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text.status().message(), "ids[2]=258 is outside the vocabulary [0, 258)");
  EXPECT_EQ(tokenizer->Decode({-5}).status().message(), "ids[0]=-5 is outside the vocabulary [0, 258)");
}

TEST(ByteTokenizer, SavesAndLoadsItsTokenizerJson) {
  ByteTokenizerOptions options;
  options.special_tokens = {"<eos>", "<pad>", "<sep>"};
  options.eos_token = "<eos>";
  options.pad_token = std::nullopt;
  const std::unique_ptr<ByteTokenizer> saved = *ByteTokenizer::Create(options);
  const std::string path = testing::MakeTempDir() + "/tokenizer.json";
  ASSERT_TRUE(saved->Save(path).ok());
  EXPECT_EQ(*util::ReadFile(path), saved->ToJson());
  EXPECT_THAT(saved->ToJson(), StartsWith("{\n  \"type\": \"byte\",\n  \"version\": 1,"));

  absl::StatusOr<std::unique_ptr<ByteTokenizer>> loaded = ByteTokenizer::Load(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->VocabSize(), 259);
  EXPECT_EQ((*loaded)->EosId(), 256);
  EXPECT_EQ((*loaded)->PadId(), std::nullopt);
  EXPECT_EQ((*loaded)->options().special_tokens, options.special_tokens);
  EXPECT_THAT(*(*loaded)->Encode("a<sep>b<eos>"), ElementsAre('a', 258, 'b', 256));
}

TEST(ByteTokenizer, FromJsonAcceptsAMinimalFile) {
  absl::StatusOr<std::unique_ptr<ByteTokenizer>> tokenizer = ByteTokenizer::FromJson(R"({"type": "byte"})");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->VocabSize(), 256);
  EXPECT_EQ((*tokenizer)->EosId(), std::nullopt);
}

TEST(ByteTokenizer, CreateRejectsInconsistentOptionsNamingTheField) {
  ByteTokenizerOptions options;
  options.special_tokens = {"<a>", "<a>"};
  absl::Status status = ByteTokenizer::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "special_tokens[1]=\"<a>\" appears more than once");

  options.special_tokens = {"<a>", ""};
  status = ByteTokenizer::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "special_tokens[1] is empty");

  options.special_tokens = {"<a>", "\xFF"};
  status = ByteTokenizer::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "special_tokens[1]=\"\\xff\" is not valid UTF-8");

  options.special_tokens = {"<a>"};
  options.eos_token = "<eos>";
  status = ByteTokenizer::Create(options).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "eos_token=\"<eos>\" is not one of the special tokens");
}

TEST(ByteTokenizer, FromJsonRejectsMalformedFilesNamingTheField) {
  const auto message = [](absl::string_view json) {
    const absl::Status status = ByteTokenizer::FromJson(json).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << json;
    return std::string(status.message());
  };
  EXPECT_THAT(message("{not json"), StartsWith("not valid JSON: "));
  EXPECT_EQ(message("[]"), "expected a JSON object, got a JSON array");
  EXPECT_EQ(message(R"({"type": "bpe"})"), R"(type: expected "byte", got "\"bpe\"")");
  EXPECT_EQ(message(R"({"special_tokens": []})"), "type: expected \"byte\", got nothing");
  EXPECT_EQ(message(R"({"type": "byte", "version": 2})"), R"(version: expected 1, got "2")");
  EXPECT_EQ(message(R"({"type": "byte", "eos_tokn": "x"})"), R"(unknown field "eos_tokn")");
  EXPECT_EQ(message(R"({"type": "byte", "special_tokens": {}})"),
            "special_tokens: expected an array, got a JSON object");
  EXPECT_EQ(message(R"({"type": "byte", "special_tokens": [{"id": 300, "content": "<e>"}]})"),
            "special_tokens[0].id: expected 256 (special tokens follow the 256 byte ids in order), got 300");
  EXPECT_EQ(message(R"({"type": "byte", "special_tokens": [{"id": 256}]})"),
            "special_tokens[0].content: expected a string");
  EXPECT_EQ(message(R"({"type": "byte", "special_tokens": ["<e>"]})"),
            "special_tokens[0]: expected an object {\"id\", \"content\"}, got a JSON string");
  EXPECT_EQ(message(R"({"type": "byte", "eos_token": 256})"), "eos_token: expected a string or null, got a JSON number");
  EXPECT_EQ(message(R"({"type": "byte", "pad_token": "<p>"})"), R"(pad_token="<p>" is not one of the special tokens)");
}

TEST(ByteTokenizer, LoadNamesThePathOfACorruptFile) {
  const std::string path = testing::MakeTempDir() + "/tokenizer.json";
  ASSERT_TRUE(util::WriteFileAtomically(path, R"({"type": "byte", "version": "one"})").ok());
  const absl::Status status = ByteTokenizer::Load(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), path + R"(: version: expected 1, got "\"one\"")");
  EXPECT_THAT(std::string(ByteTokenizer::Load(path + ".missing").status().message()), HasSubstr(path + ".missing"));
}

}  // namespace
}  // namespace rlhf::tokenizer
