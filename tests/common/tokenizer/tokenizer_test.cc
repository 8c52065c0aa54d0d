#include "common/tokenizer/tokenizer.h"

#include <unistd.h>

#include <string>

#include "common/tokenizer/byte_tokenizer.h"
#include "common/tokenizer/chat_template.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

void LinkGpt2Files(const std::string& dir) {
  for (const char* name : {"encoder.json", "vocab.bpe"}) {
    const std::string target = testing::Gpt2Dir() + "/" + name;
    ASSERT_EQ(::symlink(target.c_str(), (dir + "/" + name).c_str()), 0) << target;
  }
}

TEST(LoadTokenizer, PicksGpt2BpeForEncoderJsonAndVocabBpe) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(testing::Gpt2Dir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), "gpt2-bpe");
  EXPECT_EQ((*tokenizer)->VocabSize(), 50257);
  EXPECT_THAT(*(*tokenizer)->Encode("Hello world"), ElementsAre(15496, 995));
}

TEST(LoadTokenizer, PicksTheByteTokenizerForItsTokenizerJson) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE((*ByteTokenizer::Create())->Save(dir + "/tokenizer.json").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), "byte");
  EXPECT_EQ((*tokenizer)->VocabSize(), 258);
  EXPECT_EQ((*tokenizer)->EosId(), 256);
  EXPECT_EQ((*tokenizer)->PadId(), 257);
}

TEST(LoadTokenizer, PrefersGpt2FilesOverTokenizerJson) {
  const std::string dir = testing::MakeTempDir();
  LinkGpt2Files(dir);
  ASSERT_TRUE((*ByteTokenizer::Create())->Save(dir + "/tokenizer.json").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), "gpt2-bpe");
}

TEST(LoadTokenizer, FailsClearlyOnAnEmptyDirectory) {
  const std::string dir = testing::MakeTempDir();
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "no tokenizer in " + dir +
                                  ": looked for encoder.json + vocab.bpe (GPT-2 BPE) or tokenizer.json with "
                                  "\"type\": \"byte\" (byte-level) or a Hugging Face \"model\"");
}

TEST(LoadTokenizer, FailsClearlyOnAMissingDirectory) {
  const std::string dir = testing::MakeTempDir() + "/nope";
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(), "model directory " + dir + " does not exist or is not a directory");
}

TEST(LoadTokenizer, NamesTheHalfOfAGpt2PairItFound) {
  const std::string dir = testing::MakeTempDir();
  const std::string target = testing::Gpt2Dir() + "/encoder.json";
  ASSERT_EQ(::symlink(target.c_str(), (dir + "/encoder.json").c_str()), 0);
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("; found encoder.json without vocab.bpe"));
}

TEST(LoadTokenizer, RejectsATokenizerJsonOfAnotherKind) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", R"({"version": "1.0", "added_tokens": []})").ok());
  absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("; found tokenizer.json with no \"type\" field, which is not a tokenizer of ours"));

  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", R"({"type": "sentencepiece"})").ok());
  status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("; found tokenizer.json with \"type\": \"sentencepiece\", which is not"));

  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", R"({"type": ["byte"]})").ok());
  status = LoadTokenizer(dir).status();
  EXPECT_THAT(std::string(status.message()), HasSubstr("; found tokenizer.json with a JSON array as \"type\""));
}

TEST(TokenizerFileNames, CopyingThemCopiesTheQwen3TokenizerAndChatTemplate) {
  const std::string dir = testing::MakeTempDir();
  for (const std::string& name : TokenizerFileNames()) {
    const std::string from = testing::Qwen3Dir() + "/" + name;
    if (::access(from.c_str(), R_OK) == 0) {
      ASSERT_TRUE(util::CopyFileAtomically(from, dir + "/" + name).ok());
    }
  }
  absl::StatusOr<std::unique_ptr<Tokenizer>> original = LoadTokenizer(testing::Qwen3Dir());
  absl::StatusOr<std::unique_ptr<Tokenizer>> copy = LoadTokenizer(dir);
  ASSERT_TRUE(original.ok()) << original.status();
  ASSERT_TRUE(copy.ok()) << copy.status();
  const std::string text = "<|im_start|>user\nHello, caf\xC3\xA9!<|im_end|>";
  EXPECT_EQ(*(*copy)->Encode(text), *(*original)->Encode(text));
  EXPECT_EQ((*copy)->EosId(), (*original)->EosId());
  absl::StatusOr<std::unique_ptr<ChatTemplate>> chat = ChatTemplate::Load(dir);
  ASSERT_TRUE(chat.ok()) << chat.status();
  EXPECT_EQ(*(*chat)->RenderPrompt({{"user", "Hi"}}),
            *(*ChatTemplate::Load(testing::Qwen3Dir()))->RenderPrompt({{"user", "Hi"}}));
}

TEST(LoadTokenizer, RefusesAHuggingFaceFileItCannotRunNamingTheField) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(
      util::WriteFileAtomically(dir + "/tokenizer.json", R"({"version": "1.0", "model": {"type": "WordPiece"}})").ok());
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), dir + "/tokenizer.json: model.type is \"WordPiece\"; only \"BPE\" is supported");
}

TEST(LoadTokenizer, ReportsACorruptTokenizerJsonAsInvalidArgument) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", "{\"type\": \"byte\",").ok());
  absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir + "/tokenizer.json: not valid JSON"));

  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json",
                                        R"({"type": "byte", "special_tokens": [{"id": 1, "content": "x"}]})")
                  .ok());
  status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir + "/tokenizer.json: special_tokens[0].id: expected 256"));
}

TEST(LoadTokenizer, ReportsCorruptGpt2FilesNamingThePath) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/encoder.json", "{\"!\": 0,").ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/vocab.bpe", "#version: 0.2\n").ok());
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir + "/encoder.json: not valid JSON"));
}

TEST(LoadGpt2Tokenizer, LoadsFromExplicitPaths) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer =
      LoadGpt2Tokenizer(testing::Gpt2Dir() + "/encoder.json", testing::Gpt2Dir() + "/vocab.bpe");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), "gpt2-bpe");
  EXPECT_EQ((*tokenizer)->EosId(), 50256);
}

TEST(ReplaceInvalidUtf8, KeepsValidTextAndReplacesMaximalInvalidSubparts) {
  const std::string r = "\xEF\xBF\xBD";  // U+FFFD
  EXPECT_EQ(ReplaceInvalidUtf8(""), "");
  EXPECT_EQ(ReplaceInvalidUtf8("naïve 日本 🤖"), "naïve 日本 🤖");
  EXPECT_EQ(ReplaceInvalidUtf8("a\xFF"
                               "b"),
            "a" + r + "b");
  EXPECT_EQ(ReplaceInvalidUtf8("\xF0\x9F\xA4"), r);  // a truncated 4-byte character
  EXPECT_EQ(ReplaceInvalidUtf8("\xE2\x82"
                               "x"),
            r + "x");                                                // a truncated 3-byte character
  EXPECT_EQ(ReplaceInvalidUtf8("\xED\xA0\x80"), r + r + r);          // a surrogate
  EXPECT_EQ(ReplaceInvalidUtf8("\xC0\xAF"), r + r);                  // an overlong form
  EXPECT_EQ(ReplaceInvalidUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
}

}  // namespace
}  // namespace rlhf::tokenizer
