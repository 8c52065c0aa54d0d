#include "common/tokenizer/gpt2_bpe_tokenizer.h"

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr int32_t kEndOfTextId = 50256;

const Gpt2BpeTokenizer& Gpt2() {
  static const Gpt2BpeTokenizer* const tokenizer = [] {
    absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> loaded =
        Gpt2BpeTokenizer::Load(testing::Gpt2Dir() + "/encoder.json", testing::Gpt2Dir() + "/vocab.bpe");
    if (!loaded.ok()) {
      ADD_FAILURE() << "cannot load GPT-2's vocabulary (tools/setup.sh fills RLHF_DATA_DIR/gpt2): "
                    << loaded.status();
      std::abort();  // the test binary cannot go on without it
    }
    return loaded->release();
  }();
  return *tokenizer;
}

struct FixtureCase {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<FixtureCase> ReadFixtureCases() {
  const std::string path = testing::FixturesDir() + "/gpt2-bpe-cases.json";
  absl::StatusOr<std::string> text = util::ReadFile(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return {};
  std::vector<FixtureCase> cases;
  for (const nlohmann::json& c : nlohmann::json::parse(*text)) {
    cases.push_back({c.at("text").get<std::string>(), c.at("ids").get<std::vector<int32_t>>()});
  }
  return cases;
}

TEST(Gpt2BpeTokenizer, LoadsGpt2Vocabulary) {
  const Gpt2BpeTokenizer& tokenizer = Gpt2();
  EXPECT_EQ(tokenizer.VocabSize(), 50257);
  EXPECT_EQ(tokenizer.NumMerges(), 50000u);
  EXPECT_EQ(tokenizer.EosId(), kEndOfTextId);
  EXPECT_EQ(tokenizer.PadId(), std::nullopt);
  EXPECT_EQ(tokenizer.Kind(), "gpt2-bpe");
  EXPECT_EQ(tokenizer.TokenBytes(kEndOfTextId), "<|endoftext|>");
  EXPECT_EQ(tokenizer.TokenBytes(15496), "Hello");
  EXPECT_EQ(tokenizer.TokenBytes(995), " world");
  EXPECT_EQ(tokenizer.TokenBytes(50257), "");
}

TEST(Gpt2BpeTokenizer, EncodesFixtureCasesExactly) {
  const std::vector<FixtureCase> cases = ReadFixtureCases();
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i, ": \"", cases[i].text.substr(0, 60), "\""));
    absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(cases[i].text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*ids, cases[i].ids);
    absl::StatusOr<std::vector<int32_t>> ordinary = Gpt2().EncodeOrdinary(cases[i].text);
    ASSERT_TRUE(ordinary.ok()) << ordinary.status();
    EXPECT_EQ(*ordinary, cases[i].ids);
  }
}

TEST(Gpt2BpeTokenizer, DecodesFixtureCasesToTheirText) {
  const std::vector<FixtureCase> cases = ReadFixtureCases();
  ASSERT_FALSE(cases.empty());
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(absl::StrCat("case ", i));
    absl::StatusOr<std::string> text = Gpt2().Decode(cases[i].ids);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, cases[i].text);
  }
}

TEST(Gpt2BpeTokenizer, EncodesEndOfTextAsOneToken) {
  EXPECT_THAT(*Gpt2().Encode("<|endoftext|>"), ElementsAre(kEndOfTextId));
  EXPECT_THAT(*Gpt2().Encode("Hello world<|endoftext|><|endoftext|>Hello world"),
              ElementsAre(15496, 995, kEndOfTextId, kEndOfTextId, 15496, 995));
  // The text around a special token is encoded as if the special token were a boundary.
  std::vector<int32_t> expected = *Gpt2().Encode(" a");
  expected.push_back(kEndOfTextId);
  const std::vector<int32_t> after = *Gpt2().Encode(" b");
  expected.insert(expected.end(), after.begin(), after.end());
  EXPECT_EQ(*Gpt2().Encode(" a<|endoftext|> b"), expected);
  EXPECT_EQ(*Gpt2().Decode(expected), " a<|endoftext|> b");
}

TEST(Gpt2BpeTokenizer, LeavesPartialSpecialTokensAsText) {
  const std::vector<int32_t> ids = *Gpt2().Encode("<|endoftext|");
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(kEndOfTextId)));
  EXPECT_EQ(*Gpt2().Decode(ids), "<|endoftext|");
}

TEST(Gpt2BpeTokenizer, EncodeOrdinaryTreatsEndOfTextAsText) {
  const std::vector<int32_t> ids = *Gpt2().EncodeOrdinary("say <|endoftext|> now");
  EXPECT_THAT(ids, ::testing::Not(::testing::Contains(kEndOfTextId)));
  EXPECT_GT(ids.size(), 4u);
  EXPECT_EQ(*Gpt2().Decode(ids), "say <|endoftext|> now");
}

TEST(Gpt2BpeTokenizer, DecodeRejectsOutOfRangeIdsNamingIndexAndValue) {
  const absl::StatusOr<std::string> too_big = Gpt2().Decode({15496, 995, 50257});
  EXPECT_EQ(too_big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(too_big.status().message(), "ids[2]=50257 is outside the vocabulary [0, 50257)");
  const absl::StatusOr<std::string> negative = Gpt2().Decode({-1});
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(negative.status().message(), "ids[0]=-1 is outside the vocabulary [0, 50257)");
}

TEST(Gpt2BpeTokenizer, DecodesEmptyIdsToEmptyText) { EXPECT_EQ(*Gpt2().Decode({}), ""); }

TEST(Gpt2BpeTokenizer, DecodeReturnsBytesOfSplitCharactersUnchanged) {
  // "🤖" is three tokens; decoded one at a time the pieces are not valid UTF-8 but concatenate to the character.
  const std::vector<int32_t> ids = *Gpt2().Encode("🤖");
  ASSERT_GT(ids.size(), 1u);
  std::string joined;
  for (const int32_t id : ids) joined += *Gpt2().Decode({id});
  EXPECT_EQ(joined, "🤖");
  EXPECT_EQ(ReplaceInvalidUtf8(*Gpt2().Decode({ids[0]})), "\xEF\xBF\xBD");
}

TEST(Gpt2BpeTokenizer, RoundTripsInvalidUtf8Bytes) {
  const std::string text = "abc\xFF\xFE def\xC3 caf\xC3\xA9 \xE2\x82 \xED\xA0\x80 end\x80";
  absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(text);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*Gpt2().Decode(*ids), text);
}

TEST(Gpt2BpeTokenizer, RoundTripsRandomBytes) {
  absl::BitGen gen(std::seed_seq{42});
  for (int trial = 0; trial < 300; ++trial) {
    std::string text(absl::Uniform(gen, 0, 200), '\0');
    for (char& c : text) c = static_cast<char>(absl::Uniform(gen, 0, 256));
    SCOPED_TRACE(absl::StrCat("trial ", trial));
    absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (const int32_t id : *ids) ASSERT_TRUE(id >= 0 && id < Gpt2().VocabSize()) << id;
    EXPECT_EQ(*Gpt2().Decode(*ids), text);
  }
}

TEST(Gpt2BpeTokenizer, RoundTripsRandomUnicodeText) {
  const std::vector<std::string> alphabet = {"a", "b", "e", "t", "h", " ", "  ", "\n", "\t", "'s", "'ll", "1", "42",
                                             ".", ",", "!", "é", "ß", "Ж", "日", "本", "🤖", "\xC2\xA0", "\xE3\x80\x80",
                                             "<|endoftext|>", "'", "A", "Z", "٣"};
  absl::BitGen gen(std::seed_seq{7});
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const int n = absl::Uniform(gen, 0, 60);
    for (int i = 0; i < n; ++i) text += alphabet[absl::Uniform<size_t>(gen, 0, alphabet.size())];
    absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(text);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(*Gpt2().Decode(*ids), text) << "trial " << trial;
  }
}

TEST(Gpt2BpeTokenizer, EncodesLongInputsWithoutError) {
  const std::string letters(1 << 20, 'a');  // one 1 MiB word: the heap merge path
  absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(letters);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(ids->size(), letters.size() / 4);  // "aaaa" is one token
  EXPECT_EQ(*Gpt2().Decode(*ids), letters);

  const std::string spaces = std::string(1 << 20, ' ') + "x";  // white space before a lookahead
  ids = Gpt2().Encode(spaces);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*Gpt2().Decode(*ids), spaces);

  const std::string newlines = std::string(1 << 20, '\n');
  ids = Gpt2().Encode(newlines);
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*Gpt2().Decode(*ids), newlines);
}

TEST(Gpt2BpeTokenizer, EncodesTheSameFromManyThreads) {
  const std::vector<FixtureCase> cases = ReadFixtureCases();
  ASSERT_FALSE(cases.empty());
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (const FixtureCase& c : cases) {
          absl::StatusOr<std::vector<int32_t>> ids = Gpt2().Encode(c.text);
          if (!ids.ok() || *ids != c.ids) ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

// Corrupt vocabulary files give InvalidArgument naming the file and what is wrong.

struct Gpt2Files {
  std::string encoder_json;
  std::string vocab_bpe;
};

const Gpt2Files& RealFiles() {
  static const Gpt2Files* const files = new Gpt2Files{*util::ReadFile(testing::Gpt2Dir() + "/encoder.json"),
                                                      *util::ReadFile(testing::Gpt2Dir() + "/vocab.bpe")};
  return *files;
}

absl::Status CreateStatus(absl::string_view encoder_json, absl::string_view vocab_bpe) {
  return Gpt2BpeTokenizer::Create(encoder_json, vocab_bpe).status();
}

TEST(Gpt2BpeTokenizer, CreateRejectsEncoderJsonThatIsNotJson) {
  const absl::Status status = CreateStatus("this is not json", RealFiles().vocab_bpe);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("encoder.json: not valid JSON: "));
}

TEST(Gpt2BpeTokenizer, CreateRejectsTruncatedEncoderJson) {
  const absl::Status status = CreateStatus(RealFiles().encoder_json.substr(0, 5000), RealFiles().vocab_bpe);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("encoder.json: not valid JSON: "));
}

TEST(Gpt2BpeTokenizer, CreateRejectsEncoderJsonOfTheWrongShape) {
  absl::Status status = CreateStatus("[1, 2, 3]", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "encoder.json: expected a JSON object mapping tokens to ids, got a JSON array");

  status = CreateStatus(R"({"a": "zero"})", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), R"(encoder.json: token "a" has id "\"zero\"", not an integer)");

  status = CreateStatus(R"({"a": 0, "b": 0})", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("encoder.json: id 0 belongs to more than one token"));

  status = CreateStatus(R"({"a": 0, "b": 7})", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            R"(encoder.json: token "b" has id 7, outside [0, 2) (the ids of N tokens must be 0..N-1))");

  status = CreateStatus("{}", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "encoder.json: has no tokens");
}

TEST(Gpt2BpeTokenizer, CreateRejectsEncoderJsonWithoutTheByteAlphabet) {
  const absl::Status status = CreateStatus(R"({"a": 0, "b": 1})", "#version: 0.2\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("lacks the token \"\xC4\x80\" for byte 0x00"));
}

TEST(Gpt2BpeTokenizer, CreateRejectsTokensOutsideTheByteAlphabet) {
  const absl::Status status = CreateStatus(R"({"\u4e00": 0})", "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "encoder.json: token \"\xE4\xB8\x80\" (id 0) has U+4E00, which is not in GPT-2's "
                              "byte alphabet");
}

TEST(Gpt2BpeTokenizer, CreateRejectsMalformedMergeLines) {
  const absl::Status status = CreateStatus(RealFiles().encoder_json, "#version: 0.2\nĠ t\nnospace\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "vocab.bpe:3: expected two tokens separated by one space, got \"nospace\"");
}

TEST(Gpt2BpeTokenizer, CreateRejectsMergesOfUnknownTokens) {
  const absl::Status status = CreateStatus(RealFiles().encoder_json, "#version: 0.2\nĠ t\nzzzzzzzzzz q\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "vocab.bpe:3: token \"zzzzzzzzzz\" is not in the vocabulary");
}

TEST(Gpt2BpeTokenizer, CreateRejectsBinaryGarbageAsVocabBpe) {
  std::string garbage(4096, '\0');
  absl::BitGen gen(std::seed_seq{3});
  for (char& c : garbage) c = static_cast<char>(absl::Uniform(gen, 0, 256));
  const absl::Status status = CreateStatus(RealFiles().encoder_json, garbage);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), StartsWith("vocab.bpe:1: "));
}

TEST(Gpt2BpeTokenizer, CreateRejectsEmptyVocabBpe) {
  const absl::Status status = CreateStatus(RealFiles().encoder_json, "");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "vocab.bpe: is empty");
}

TEST(Gpt2BpeTokenizer, LoadNamesThePathOfACorruptFile) {
  const std::string dir = testing::MakeTempDir();
  const std::string encoder_path = dir + "/encoder.json";
  const std::string vocab_path = dir + "/vocab.bpe";
  ASSERT_TRUE(util::WriteFileAtomically(encoder_path, RealFiles().encoder_json).ok());
  ASSERT_TRUE(util::WriteFileAtomically(vocab_path, "#version: 0.2\nĠ t\nbroken-line\n").ok());
  const absl::Status status = Gpt2BpeTokenizer::Load(encoder_path, vocab_path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            absl::StrCat(vocab_path, ":3: expected two tokens separated by one space, got \"broken-line\""));
}

TEST(Gpt2BpeTokenizer, LoadReportsAMissingFileAsNotFound) {
  const std::string dir = testing::MakeTempDir();
  const absl::Status status = Gpt2BpeTokenizer::Load(dir + "/encoder.json", dir + "/vocab.bpe").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(dir + "/encoder.json"));
}

TEST(Gpt2BpeTokenizer, WorksWithATinyHandMadeVocabulary) {
  // The 256 byte tokens, then "ab" and "abc" from two merges, then the end-of-text token.
  nlohmann::json encoder = nlohmann::json::object();
  int32_t next_extra = 256, id = 0;
  for (int b = 0; b < 256; ++b) {
    const bool is_printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const uint32_t cp = is_printable ? b : next_extra++;
    std::string token;
    if (cp < 0x80) {
      token.push_back(static_cast<char>(cp));
    } else {
      token.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      token.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    encoder[token] = id++;
  }
  encoder["ab"] = id++;
  encoder["abc"] = id++;
  encoder["<|endoftext|>"] = id++;
  absl::StatusOr<std::unique_ptr<Gpt2BpeTokenizer>> tokenizer =
      Gpt2BpeTokenizer::Create(encoder.dump(), "#version: 0.2\na b\nab c\n");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->VocabSize(), 259);
  EXPECT_EQ((*tokenizer)->EosId(), 258);
  EXPECT_THAT(*(*tokenizer)->Encode("abcab<|endoftext|>"), ElementsAre(257, 256, 258));
  EXPECT_THAT(*(*tokenizer)->Encode("cab"), ElementsAre('c', 256));
}

}  // namespace
}  // namespace rlhf::tokenizer
