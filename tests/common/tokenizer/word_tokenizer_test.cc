#include "common/tokenizer/word_tokenizer.h"

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
using ::testing::IsEmpty;
using ::testing::StartsWith;

// Ids: <pad> 0, <bos> 1, <eos> 2, <unk> 3, cat 4, dog 5, ":" 6.
WordTokenizerOptions SmallOptions() {
  WordTokenizerOptions options;
  options.vocab = {"<pad>", "<bos>", "<eos>", "<unk>", "cat", "dog", ":"};
  options.special_tokens = {"<pad>", "<bos>", "<eos>", "<unk>"};
  return options;
}

std::unique_ptr<WordTokenizer> Small() {
  absl::StatusOr<std::unique_ptr<WordTokenizer>> tokenizer = WordTokenizer::Create(SmallOptions());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  return *std::move(tokenizer);
}

TEST(WordTokenizer, NumbersTheVocabularyInOrderAndNamesItsSpecialTokens) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  EXPECT_EQ(tokenizer->VocabSize(), 7);
  EXPECT_EQ(tokenizer->PadId(), 0);
  EXPECT_EQ(tokenizer->BosId(), 1);
  EXPECT_EQ(tokenizer->EosId(), 2);
  EXPECT_EQ(tokenizer->UnkId(), 3);
  EXPECT_EQ(tokenizer->Kind(), "word");
  EXPECT_EQ(tokenizer->OrdinaryId("dog"), 5);
  EXPECT_EQ(tokenizer->OrdinaryId("<eos>"), std::nullopt);
  EXPECT_EQ(tokenizer->OrdinaryId("cow"), std::nullopt);
  EXPECT_TRUE(tokenizer->IsSpecial(2));
  EXPECT_FALSE(tokenizer->IsSpecial(4));
  EXPECT_FALSE(tokenizer->IsSpecial(99));
}

TEST(WordTokenizer, SplitsOnAnyAsciiWhitespaceAndMapsUnknownWordsToUnk) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  EXPECT_THAT(*tokenizer->Encode("  cat\tdog\n\r\v\f:  "), ElementsAre(4, 5, 6));
  EXPECT_THAT(*tokenizer->Encode("cat cow Cat"), ElementsAre(4, 3, 3));
  EXPECT_THAT(*tokenizer->Encode(""), IsEmpty());
  EXPECT_THAT(*tokenizer->Encode(" \t\n"), IsEmpty());
  // Bytes that are not UTF-8 are an unknown word like any other.
  EXPECT_THAT(*tokenizer->Encode("cat \xFF\xFE dog"), ElementsAre(4, 3, 5));
}

TEST(WordTokenizer, EncodesSpecialTokensWhereverTheyOccur) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  EXPECT_THAT(*tokenizer->Encode("<bos> cat dog <eos>"), ElementsAre(1, 4, 5, 2));
  EXPECT_THAT(*tokenizer->Encode("cat<eos>dog"), ElementsAre(4, 2, 5));
  EXPECT_THAT(*tokenizer->Encode("<pad><pad>"), ElementsAre(0, 0));
}

TEST(WordTokenizer, EncodeOrdinaryNeverProducesASpecialToken) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  EXPECT_THAT(*tokenizer->EncodeOrdinary("cat <eos> dog"), ElementsAre(4, 3, 5));
  EXPECT_THAT(*tokenizer->EncodeOrdinary("cat<eos>"), ElementsAre(3));
  EXPECT_THAT(*tokenizer->EncodeOrdinary("<bos> <pad> <unk> :"), ElementsAre(3, 3, 3, 6));
  absl::BitGen gen(std::seed_seq{5});
  const std::vector<std::string> pieces = {"cat", "dog", ":", "<eos>", "<bos>", "<pad>", " ", "\n", "x", "<"};
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    for (int i = absl::Uniform(gen, 0, 12); i > 0; --i) text += pieces[absl::Uniform<size_t>(gen, 0, pieces.size())];
    const std::vector<int32_t> ids = *tokenizer->EncodeOrdinary(text);
    for (const int32_t id : ids) {
      EXPECT_TRUE(!tokenizer->IsSpecial(id) || id == tokenizer->UnkId()) << text;
    }
  }
}

TEST(WordTokenizer, DecodeJoinsWithSingleSpacesAndRoundTripsNormalisedText) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  EXPECT_EQ(*tokenizer->Decode({4, 5, 6, 2}), "cat dog : <eos>");
  EXPECT_EQ(*tokenizer->Decode({}), "");
  EXPECT_EQ(*tokenizer->Decode({3}), "<unk>");
  EXPECT_EQ(*tokenizer->Decode(*tokenizer->Encode("  cat \n dog<eos>")), "cat dog <eos>");
  // Every id sequence survives Decode then Encode.
  absl::BitGen gen(std::seed_seq{7});
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> ids(absl::Uniform(gen, 0, 20));
    for (int32_t& id : ids) id = absl::Uniform(gen, 0, tokenizer->VocabSize());
    EXPECT_EQ(*tokenizer->Encode(*tokenizer->Decode(ids)), ids);
  }
}

TEST(WordTokenizer, DecodeRejectsOutOfRangeIdsNamingIndexAndValue) {
  const std::unique_ptr<WordTokenizer> tokenizer = Small();
  const absl::StatusOr<std::string> text = tokenizer->Decode({4, 7});
  EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(text.status().message(), "ids[1]=7 is outside the vocabulary [0, 7)");
  EXPECT_EQ(tokenizer->Decode({-1}).status().message(), "ids[0]=-1 is outside the vocabulary [0, 7)");
}

TEST(WordTokenizer, SavesAndLoadsItsTokenizerJson) {
  WordTokenizerOptions options = SmallOptions();
  options.pad_token = std::nullopt;
  const std::unique_ptr<WordTokenizer> saved = *WordTokenizer::Create(options);
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(saved->Save(dir + "/tokenizer.json").ok());
  EXPECT_EQ(*util::ReadFile(dir + "/tokenizer.json"), saved->ToJson());
  EXPECT_THAT(saved->ToJson(), StartsWith("{\n  \"type\": \"word\",\n  \"version\": 1,\n  \"vocab\": [\n"));

  absl::StatusOr<std::unique_ptr<WordTokenizer>> loaded = WordTokenizer::Load(dir + "/tokenizer.json");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->options().vocab, options.vocab);
  EXPECT_EQ((*loaded)->options().special_tokens, options.special_tokens);
  EXPECT_EQ((*loaded)->PadId(), std::nullopt);
  EXPECT_EQ((*loaded)->EosId(), 2);
  EXPECT_EQ((*loaded)->ToJson(), saved->ToJson());

  // LoadTokenizer recognises the file by its "type".
  absl::StatusOr<std::unique_ptr<Tokenizer>> generic = LoadTokenizer(dir);
  ASSERT_TRUE(generic.ok()) << generic.status();
  EXPECT_EQ((*generic)->Kind(), "word");
  EXPECT_EQ((*generic)->BosId(), 1);
  EXPECT_THAT(*(*generic)->EncodeOrdinary("dog cat :"), ElementsAre(5, 4, 6));
}

TEST(WordTokenizer, LoadTokenizerNamesTheFileOfAMalformedWordTokenizer) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", R"({"type": "word", "vocab": ["a"]})").ok());
  const absl::Status status = LoadTokenizer(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), dir + "/tokenizer.json: special_tokens: missing (an array of strings)");
}

TEST(WordTokenizer, TheByteTokenizerHasNoBos) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", R"({"type": "byte"})").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->BosId(), std::nullopt);
}

TEST(WordTokenizer, CreateRejectsInconsistentOptionsNamingTheField) {
  const auto message = [](WordTokenizerOptions options) {
    const absl::Status status = WordTokenizer::Create(std::move(options)).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    return std::string(status.message());
  };
  WordTokenizerOptions options = SmallOptions();
  options.vocab.push_back("cat");
  EXPECT_EQ(message(options), "vocab[7]=\"cat\" appears more than once (first at vocab[4])");
  options = SmallOptions();
  options.vocab[5] = "hot dog";
  EXPECT_EQ(message(options), "vocab[5]=\"hot dog\" contains whitespace (words are split on it)");
  options.vocab[5] = "";
  EXPECT_EQ(message(options), "vocab[5] is empty");
  options.vocab[5] = "\xC0";
  EXPECT_EQ(message(options), "vocab[5]=\"\\xc0\" is not valid UTF-8");
  options = SmallOptions();
  options.special_tokens.push_back("<sep>");
  EXPECT_EQ(message(options), "special_tokens[4]=\"<sep>\" is not in vocab");
  options = SmallOptions();
  options.special_tokens.push_back("<eos>");
  EXPECT_EQ(message(options), "special_tokens[4]=\"<eos>\" appears more than once");
  options = SmallOptions();
  options.unk_token = "cat";
  EXPECT_EQ(message(options), "unk_token=\"cat\" is not one of the special tokens");
  options = SmallOptions();
  options.eos_token = "dog";
  EXPECT_EQ(message(options), "eos_token=\"dog\" is not one of the special tokens");
  options = SmallOptions();
  options.vocab.clear();
  EXPECT_EQ(message(options), "vocab is empty");
}

TEST(WordTokenizer, FromJsonRejectsMalformedFilesNamingTheField) {
  const auto message = [](absl::string_view json) {
    const absl::Status status = WordTokenizer::FromJson(json).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << json;
    return std::string(status.message());
  };
  EXPECT_THAT(message("{not json"), StartsWith("not valid JSON: "));
  EXPECT_EQ(message("[]"), "expected a JSON object, got a JSON array");
  EXPECT_EQ(message(R"({"type": "byte"})"), R"(type: expected "word", got "\"byte\"")");
  EXPECT_EQ(message(R"({"type": "word", "version": 3})"), R"(version: expected 1, got "3")");
  EXPECT_EQ(message(R"({"type": "word", "vocabulary": []})"), R"(unknown field "vocabulary")");
  EXPECT_EQ(message(R"({"type": "word", "vocab": "a b"})"), "vocab: expected an array of strings, got a JSON string");
  EXPECT_EQ(message(R"({"type": "word", "vocab": ["a", 1]})"), "vocab[1]: expected a string, got a JSON number");
  EXPECT_EQ(message(R"({"type": "word", "vocab": ["<unk>"], "special_tokens": ["<unk>"]})"),
            "unk_token: missing (a word tokenizer needs one)");
  EXPECT_EQ(message(R"({"type": "word", "vocab": ["<unk>"], "special_tokens": ["<unk>"], "unk_token": "<unk>",
                        "eos_token": 2})"),
            "eos_token: expected a string or null, got a JSON number");
  // The minimal file: a vocabulary with its unknown token.
  absl::StatusOr<std::unique_ptr<WordTokenizer>> minimal =
      WordTokenizer::FromJson(R"({"type": "word", "vocab": ["<unk>", "a"], "special_tokens": ["<unk>"],
                                  "unk_token": "<unk>"})");
  ASSERT_TRUE(minimal.ok()) << minimal.status();
  EXPECT_EQ((*minimal)->EosId(), std::nullopt);
  EXPECT_EQ((*minimal)->BosId(), std::nullopt);
  EXPECT_THAT(*(*minimal)->Encode("a b"), ElementsAre(1, 0));
}

}  // namespace
}  // namespace rlhf::tokenizer
