#include "common/tokenizer/hf_bpe_tokenizer.h"

#include <cstdlib>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/unicode_normalizer.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer {
namespace {

// A number in [lo, hi) from `gen` (std::mt19937's sequence is fixed by the standard).
inline size_t Uniform(std::mt19937& gen, size_t lo, size_t hi) { return lo + gen() % (hi - lo); }

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// One real tokenizer folder of tools/setup.sh and its reference cases in the shared fixtures.
struct Family {
  const char* name;
  std::string (*dir)();
  const char* cases_file;
};
const Family kQwen3{"qwen3", &testing::Qwen3Dir, "qwen3-bpe-cases.json"};
const Family kLlama3{"llama3", &testing::Llama3Dir, "llama3-bpe-cases.json"};

const HfBpeTokenizer& Load(const Family& family) {
  static std::map<std::string, const HfBpeTokenizer*>* const loaded =
      new std::map<std::string, const HfBpeTokenizer*>();
  auto it = loaded->find(family.name);
  if (it == loaded->end()) {
    absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = HfBpeTokenizer::Load(family.dir());
    if (!tokenizer.ok()) {
      ADD_FAILURE() << "cannot load the " << family.name << " tokenizer (tools/setup.sh fills RLHF_DATA_DIR/"
                    << family.name << "): " << tokenizer.status();
      std::abort();  // the test binary cannot go on without it
    }
    it = loaded->emplace(family.name, tokenizer->release()).first;
  }
  return *it->second;
}
const HfBpeTokenizer& Qwen3() { return Load(kQwen3); }
const HfBpeTokenizer& Llama3() { return Load(kLlama3); }

struct BpeCase {
  std::string text;
  std::vector<int32_t> ids;
  std::string decoded;  // "decoded" when the fixture has it, else "text"
};

std::vector<BpeCase> ReadCases(const Family& family) {
  const std::string path = testing::FixturesDir() + "/" + family.cases_file;
  absl::StatusOr<std::string> text = util::ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return {};
  std::vector<BpeCase> cases;
  for (const nlohmann::json& c : nlohmann::json::parse(*text)) {
    BpeCase bpe_case{c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>(), ""};
    bpe_case.decoded = c.contains("decoded") ? c.at("decoded").get<std::string>() : bpe_case.text;
    cases.push_back(std::move(bpe_case));
  }
  return cases;
}

std::string Abbreviated(const std::string& text) { return text.size() <= 60 ? text : text.substr(0, 60) + "..."; }

void ExpectEncodesEveryCase(const Family& family) {
  const HfBpeTokenizer& tokenizer = Load(family);
  const std::vector<BpeCase> cases = ReadCases(family);
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(family.cases_file, " case ", i, ": \"", Abbreviated(cases[i].text), "\""));
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(cases[i].text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, cases[i].ids);
  }
}

void ExpectDecodesEveryCase(const Family& family) {
  const HfBpeTokenizer& tokenizer = Load(family);
  const std::vector<BpeCase> cases = ReadCases(family);
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat(family.cases_file, " case ", i, ": \"", Abbreviated(cases[i].text), "\""));
    absl::StatusOr<std::string> text = tokenizer.Decode(cases[i].ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, cases[i].decoded);
  }
}

// Encoding with added tokens treated as text gives the fixture's ids wherever the text has none of them.
void ExpectEncodeOrdinaryAgreesWithoutAddedTokens(const Family& family) {
  const HfBpeTokenizer& tokenizer = Load(family);
  int compared = 0;
  for (const BpeCase& c : ReadCases(family)) {
    bool has_added = false;
    for (const int32_t id : c.ids) has_added = has_added || tokenizer.IsAddedToken(id);
    if (has_added) continue;
    SCOPED_TRACE(Abbreviated(c.text));
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.EncodeOrdinary(c.text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, c.ids);
    ++compared;
  }
  EXPECT_GT(compared, 0);
}

// The text a tokenizer gives back for `text`: its normal form when the tokenizer normalises (Qwen3: NFC).
std::string Normalized(const Family& family, const std::string& text) {
  if (std::string(family.name) != "qwen3") return text;
  return *internal::NormalizeUnicode(text, internal::NormalizationForm::kNfc);
}

void ExpectRandomBytesRoundTrip(const Family& family, uint32_t seed) {
  const HfBpeTokenizer& tokenizer = Load(family);
  std::mt19937 gen(seed);  // fixed sequence: tests are deterministic
  for (int trial = 0; trial < 300; ++trial) {
    std::string text(Uniform(gen, 0, 300), '\0');
    for (char& c : text) c = static_cast<char>(Uniform(gen, 0, 256));
    SCOPED_TRACE(absl::StrCat("trial ", trial));
    for (const bool ordinary : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = ordinary ? tokenizer.EncodeOrdinary(text) : tokenizer.Encode(text);
      ASSERT_TRUE(ids.ok()) << ids.status();
      for (const int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < tokenizer.VocabSize()) << id;
      EXPECT_EQ(*tokenizer.Decode(*ids), Normalized(family, text));
    }
  }
}

void ExpectRandomUnicodeRoundTrip(const Family& family, uint32_t seed) {
  const HfBpeTokenizer& tokenizer = Load(family);
  const std::vector<std::string> alphabet = {"a",
                                             "b",
                                             "e",
                                             "Z",
                                             " ",
                                             "  ",
                                             "\n",
                                             "\r\n",
                                             "\t",
                                             "'s",
                                             "'LL",
                                             "1",
                                             "42",
                                             "12345",
                                             ".",
                                             "!",
                                             "é",
                                             "e\xCC\x81",
                                             "\xCC\x88",
                                             "ß",
                                             "Ж",
                                             "日",
                                             "🤖",
                                             "👍🏽",
                                             "\xC2\xA0",
                                             "\xC2\x85",
                                             "\xEF\xBB\xBF",
                                             "\xE3\x80\x80",
                                             "<|im_start|>",
                                             "<|im_end|>",
                                             "<|eot_id|>",
                                             "<|begin_of_text|>",
                                             "<think>",
                                             "<|",
                                             "|>",
                                             "\xFF",
                                             "\xC3",
                                             "\xE2\x82",
                                             "٣"};
  std::mt19937 gen(seed);  // fixed sequence: tests are deterministic
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = Uniform(gen, 0, 80);
    for (int i = 0; i < n; ++i) text += alphabet[Uniform(gen, 0, alphabet.size())];
    for (const bool ordinary : {false, true}) {
      absl::StatusOr<std::vector<int32_t>> ids = ordinary ? tokenizer.EncodeOrdinary(text) : tokenizer.Encode(text);
      ASSERT_TRUE(ids.ok()) << ids.status();
      EXPECT_EQ(*tokenizer.Decode(*ids), Normalized(family, text)) << "trial " << trial;
    }
  }
}

void ExpectLongInputsEncode(const Family& family) {
  const HfBpeTokenizer& tokenizer = Load(family);
  for (const std::string& text :
       {std::string(1 << 20, 'a'), std::string(1 << 20, ' ') + "x", std::string(1 << 20, '\n'),
        std::string(1 << 19, '7'), std::string(1 << 20, '!'), std::string(1 << 20, '\xFF'), [] {
          std::string s;
          for (int i = 0; i < (1 << 17); ++i) s += " \t\n\r";
          return s;
        }()}) {
    SCOPED_TRACE(absl::StrCat("text of ", text.size(), " bytes starting with byte ", static_cast<int>(text[0])));
    absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*tokenizer.Decode(*ids), text);
  }
}

void ExpectSameIdsFromManyThreads(const Family& family) {
  const HfBpeTokenizer& tokenizer = Load(family);
  const std::vector<BpeCase> cases = ReadCases(family);
  ASSERT_FALSE(cases.empty());
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (const BpeCase& c : cases) {
          absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(c.text);
          if (!ids.ok() || *ids != c.ids) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ElementsAre(0, 0, 0, 0));
}

TEST(Qwen3Tokenizer, LoadsTheQwen3Files) {
  const HfBpeTokenizer& tokenizer = Qwen3();
  EXPECT_EQ(tokenizer.Kind(), "hf-bpe");
  // 151643 vocabulary tokens and 26 added ones (<|endoftext|> .. </think>).
  EXPECT_EQ(tokenizer.VocabSize(), 151669);
  EXPECT_EQ(tokenizer.NumAddedTokens(), 26u);
  EXPECT_EQ(tokenizer.TokenToId("<|endoftext|>"), 151643);
  EXPECT_EQ(tokenizer.TokenToId("<|im_start|>"), 151644);
  EXPECT_EQ(tokenizer.TokenToId("Ġthe"), *tokenizer.TokenToId("Ġthe"));
  EXPECT_EQ(tokenizer.TokenBytes(*tokenizer.TokenToId("Ġthe")), " the");
  // tokenizer_config.json: eos "<|im_end|>", pad "<|endoftext|>", bos null.
  EXPECT_EQ(tokenizer.EosId(), tokenizer.TokenToId("<|im_end|>"));
  EXPECT_EQ(tokenizer.PadId(), 151643);
  EXPECT_EQ(tokenizer.BosId(), std::nullopt);
  // The post-processor is ByteLevel: add_special_tokens=True adds nothing.
  EXPECT_TRUE(tokenizer.TextPrefixIds().empty());
  EXPECT_TRUE(tokenizer.TextSuffixIds().empty());
  EXPECT_FALSE(tokenizer.AddsBosToText());
  EXPECT_TRUE(tokenizer.IsSpecialToken(151644));
  EXPECT_FALSE(tokenizer.IsSpecialToken(*tokenizer.TokenToId("<think>")));  // an added token, not special
}

TEST(Qwen3Tokenizer, EncodesEveryFixtureCaseExactly) { ExpectEncodesEveryCase(kQwen3); }
TEST(Qwen3Tokenizer, DecodesEveryFixtureCaseExactly) { ExpectDecodesEveryCase(kQwen3); }
TEST(Qwen3Tokenizer, EncodeOrdinaryAgreesOnCasesWithoutAddedTokens) {
  ExpectEncodeOrdinaryAgreesWithoutAddedTokens(kQwen3);
}
TEST(Qwen3Tokenizer, RoundTripsRandomBytesAsTheirNfcForm) { ExpectRandomBytesRoundTrip(kQwen3, 11); }
TEST(Qwen3Tokenizer, RoundTripsRandomUnicodeAsItsNfcForm) { ExpectRandomUnicodeRoundTrip(kQwen3, 12); }
TEST(Qwen3Tokenizer, EncodesMegabyteRunsWithoutError) { ExpectLongInputsEncode(kQwen3); }
TEST(Qwen3Tokenizer, EncodesTheSameFromManyThreads) { ExpectSameIdsFromManyThreads(kQwen3); }

TEST(Qwen3Tokenizer, MatchesAddedTokensOnlyInEncode) {
  const HfBpeTokenizer& tokenizer = Qwen3();
  const int32_t im_end = *tokenizer.TokenToId("<|im_end|>");
  const int32_t think = *tokenizer.TokenToId("<think>");
  const std::string text = "a<|im_end|>b<think>c";
  const std::vector<int32_t> ids = *tokenizer.Encode(text);
  EXPECT_THAT(ids, ::testing::Contains(im_end));
  EXPECT_THAT(ids, ::testing::Contains(think));  // non-special added tokens are matched too
  const std::vector<int32_t> ordinary = *tokenizer.EncodeOrdinary(text);
  EXPECT_THAT(ordinary, ::testing::Not(::testing::Contains(im_end)));
  EXPECT_THAT(ordinary, ::testing::Not(::testing::Contains(think)));
  EXPECT_EQ(*tokenizer.Decode(ids), text);
  EXPECT_EQ(*tokenizer.Decode(ordinary), text);
}

TEST(Qwen3Tokenizer, NormalizesToNfcBeforeSplitting) {
  const HfBpeTokenizer& tokenizer = Qwen3();
  // "é" as e + U+0301 encodes as the precomposed U+00E9.
  EXPECT_EQ(*tokenizer.Encode("caf\x65\xCC\x81"), *tokenizer.Encode("caf\xC3\xA9"));
  // Invalid bytes split the normalised stretches and come back unchanged.
  const std::string text = "e\xFF\xCC\x81";
  EXPECT_EQ(*tokenizer.Decode(*tokenizer.Encode(text)), text);
}

TEST(Llama3Tokenizer, LoadsTheLlama3Files) {
  const HfBpeTokenizer& tokenizer = Llama3();
  EXPECT_EQ(tokenizer.Kind(), "hf-bpe");
  EXPECT_EQ(tokenizer.VocabSize(), 128256);
  EXPECT_EQ(tokenizer.NumAddedTokens(), 256u);
  EXPECT_EQ(tokenizer.TokenToId("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tokenizer.TokenToId("<|eot_id|>"), 128009);
  EXPECT_EQ(tokenizer.BosId(), 128000);
  EXPECT_EQ(tokenizer.EosId(), tokenizer.TokenToId("<|end_of_text|>"));
  EXPECT_EQ(tokenizer.PadId(), std::nullopt);
  // This file's post-processor is ByteLevel (no TemplateProcessing): add_special_tokens=True adds no BOS.
  EXPECT_TRUE(tokenizer.TextPrefixIds().empty());
  EXPECT_FALSE(tokenizer.AddsBosToText());
}

TEST(Llama3Tokenizer, EncodesEveryFixtureCaseExactly) { ExpectEncodesEveryCase(kLlama3); }
TEST(Llama3Tokenizer, DecodesEveryFixtureCaseExactly) { ExpectDecodesEveryCase(kLlama3); }
TEST(Llama3Tokenizer, EncodeOrdinaryAgreesOnCasesWithoutAddedTokens) {
  ExpectEncodeOrdinaryAgreesWithoutAddedTokens(kLlama3);
}
TEST(Llama3Tokenizer, RoundTripsRandomBytes) { ExpectRandomBytesRoundTrip(kLlama3, 21); }
TEST(Llama3Tokenizer, RoundTripsRandomUnicode) { ExpectRandomUnicodeRoundTrip(kLlama3, 22); }
TEST(Llama3Tokenizer, EncodesMegabyteRunsWithoutError) { ExpectLongInputsEncode(kLlama3); }
TEST(Llama3Tokenizer, EncodesTheSameFromManyThreads) { ExpectSameIdsFromManyThreads(kLlama3); }

TEST(Llama3Tokenizer, IgnoreMergesKeepsAVocabularyPieceWhole) {
  const HfBpeTokenizer& tokenizer = Llama3();
  // " Việt" is one vocabulary token that the merges alone would not produce.
  const std::optional<int32_t> viet = tokenizer.TokenToId(internal::BytesToByteLevel(" Vi\xE1\xBB\x87t"));
  ASSERT_TRUE(viet.has_value());
  EXPECT_THAT(*tokenizer.Encode(" Vi\xE1\xBB\x87t"), ElementsAre(*viet));
}

TEST(Llama3Tokenizer, DecodeRejectsOutOfRangeIdsNamingIndexAndValue) {
  const absl::Status status = Llama3().Decode({1, 128256}).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "ids[1]=128256 is outside the vocabulary [0, 128256)");
}

TEST(Llama3Tokenizer, LoadTokenizerPicksItForAHuggingFaceFolder) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(testing::Llama3Dir());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), kHfBpeKind);
  EXPECT_EQ((*tokenizer)->VocabSize(), 128256);
  EXPECT_EQ(*(*tokenizer)->Encode("Hello world"), *Llama3().Encode("Hello world"));
}

}  // namespace
}  // namespace rlhf::tokenizer
