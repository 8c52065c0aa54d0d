// The tokenizer.json features HfBpeTokenizer supports, on small synthetic files, and the ones it refuses. The
// expected ids of the feature tests were produced by Hugging Face's tokenizers 0.23.2 (npm `tokenizers`) on the
// same files.
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/byte_level.h"
#include "common/tokenizer/hf_bpe_tokenizer.h"
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
using ::testing::IsEmpty;
using Json = nlohmann::json;

// A byte-level BPE tokenizer.json: the 256 byte tokens (ids 0..255, in byte order), then "he" 256, "ll" 257,
// "hell" 258, "hello" 259, "Ġhello" 260, "ĠĠ" 261, with the merges that make them; added tokens start at 262.
Json BaseJson() {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[internal::BytesToByteLevel(std::string(1, static_cast<char>(b)))] = b;
  int next = 256;
  for (const char* token : {"he", "ll", "hell", "hello", "\xC4\xA0hello", "\xC4\xA0\xC4\xA0"}) vocab[token] = next++;
  Json merges = Json::array({Json::array({"h", "e"}), Json::array({"l", "l"}), Json::array({"he", "ll"}),
                             Json::array({"hell", "o"}), Json::array({"\xC4\xA0", "hello"}),
                             Json::array({"\xC4\xA0", "\xC4\xA0"})});
  return Json{{"version", "1.0"},
              {"truncation", nullptr},
              {"padding", nullptr},
              {"added_tokens", Json::array()},
              {"normalizer", nullptr},
              {"pre_tokenizer",
               {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
              {"post_processor", nullptr},
              {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}}},
              {"model",
               {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", merges}}}};
}

Json AddedToken(int id, const std::string& content, bool special = true, bool lstrip = false, bool rstrip = false,
                bool normalized = false) {
  return Json{{"id", id},         {"content", content},       {"single_word", false}, {"lstrip", lstrip},
              {"rstrip", rstrip}, {"normalized", normalized}, {"special", special}};
}

absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> Create(const Json& json, const std::string& config = "") {
  return HfBpeTokenizer::Create(json.dump(), config);
}

std::vector<int32_t> EncodeWith(const HfBpeTokenizer& tokenizer, const std::string& text) {
  absl::StatusOr<std::vector<int32_t>> ids = tokenizer.Encode(text);
  EXPECT_TRUE(ids.ok()) << ids.status();
  return ids.ok() ? *ids : std::vector<int32_t>{};
}

TEST(HfBpeTokenizer, MergesAndSplitsLikeGpt2WithTheByteLevelRegex) {
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(BaseJson());
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->VocabSize(), 262);
  EXPECT_EQ((*tokenizer)->NumMerges(), 6u);
  EXPECT_THAT(EncodeWith(**tokenizer, "hello hello  hello"), ElementsAre(259, 260, 32, 260));
  EXPECT_THAT(EncodeWith(**tokenizer, ""), IsEmpty());
  EXPECT_EQ((*tokenizer)->EosId(), std::nullopt);  // no tokenizer_config.json
}

TEST(HfBpeTokenizer, WidensLstripAndRstripAddedTokensOverWhiteSpace) {
  Json json = BaseJson();
  json["added_tokens"] =
      Json::array({AddedToken(262, "<s>"), AddedToken(263, "[L]", true, /*lstrip=*/true),
                   AddedToken(264, "[R]", true, false, /*rstrip=*/true), AddedToken(265, "[LR]", true, true, true)});
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const HfBpeTokenizer& t = **tokenizer;
  EXPECT_THAT(EncodeWith(t, "a [L] b"), ElementsAre(97, 263, 32, 98));
  EXPECT_THAT(EncodeWith(t, "a   [L]b"), ElementsAre(97, 263, 98));
  EXPECT_THAT(EncodeWith(t, "a [R]  b"), ElementsAre(97, 32, 264, 98));
  EXPECT_THAT(EncodeWith(t, "x<s> [L]"), ElementsAre(120, 262, 263));
  EXPECT_THAT(EncodeWith(t, "[R]   [L]"), ElementsAre(264, 263));
  // Unicode white space (U+3000, U+00A0, U+0085) is taken too.
  EXPECT_THAT(EncodeWith(t, " \xE3\x80\x80[LR]\xC2\xA0\xC2\x85 z"), ElementsAre(265, 122));
  EXPECT_THAT(EncodeWith(t, "[L][L]  [R][R] "), ElementsAre(263, 263, 261, 264, 264));
  EXPECT_THAT(EncodeWith(t, "\t[LR]\n"), ElementsAre(265));
  EXPECT_THAT(EncodeWith(t, "hello [L]hello"), ElementsAre(259, 263, 259));
  // The white space taken is not decoded back, as in tokenizers.
  EXPECT_EQ(*t.Decode(EncodeWith(t, "a [L] b")), "a[L] b");
}

TEST(HfBpeTokenizer, MatchesNormalizedAddedTokensInTheNormalizedText) {
  Json json = BaseJson();
  json["normalizer"] = {{"type", "Sequence"}, {"normalizers", Json::array({{{"type", "NFC"}}})}};
  json["added_tokens"] =
      Json::array({AddedToken(262, "H\xC3\xA9", false, false, false, /*normalized=*/true),
                   AddedToken(263, "e\xCC\x81x", false, false, false, /*normalized=*/true), AddedToken(264, "<raw>")});
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const HfBpeTokenizer& t = **tokenizer;
  EXPECT_THAT(EncodeWith(t, "He\xCC\x81llo"), ElementsAre(262, 257, 111));
  EXPECT_THAT(EncodeWith(t, "H\xC3\xA9llo"), ElementsAre(262, 257, 111));
  EXPECT_THAT(EncodeWith(t, "ae\xCC\x81x"), ElementsAre(97, 263));
  EXPECT_THAT(EncodeWith(t, "a\xC3\xA9x"), ElementsAre(97, 263));
  EXPECT_THAT(EncodeWith(t, "<raw>He\xCC\x81"), ElementsAre(264, 262));
  EXPECT_THAT(EncodeWith(t, "H\xC3\xA9<raw>"), ElementsAre(262, 264));
  // A normalised added token decodes from its normal form through the byte alphabet, as tokenizers' decoder does:
  // "Hé" is in the alphabet, so its "é" is the byte 0xE9 (tokenizers then shows U+FFFD for it).
  EXPECT_EQ(*t.Decode({262}), "H\xE9");
  EXPECT_EQ(ReplaceInvalidUtf8(*t.Decode({262})), "H\xEF\xBF\xBD");
  EXPECT_TRUE(t.EncodeOrdinary("H\xC3\xA9").ok());
  EXPECT_THAT(*t.EncodeOrdinary("H\xC3\xA9"), ElementsAre(72, 195, 169));
}

TEST(HfBpeTokenizer, AddsAPrefixSpaceToEachPiece) {
  Json json = BaseJson();
  json["pre_tokenizer"]["add_prefix_space"] = true;
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(EncodeWith(**tokenizer, "hello"), ElementsAre(260));
  EXPECT_THAT(EncodeWith(**tokenizer, " hello"), ElementsAre(260));
  EXPECT_THAT(EncodeWith(**tokenizer, "hello hello"), ElementsAre(260, 260));
  EXPECT_THAT(EncodeWith(**tokenizer, "  hello"), ElementsAre(32, 260));
  EXPECT_THAT(EncodeWith(**tokenizer, "\xC3\xA9"), ElementsAre(32, 195, 169));

  // In a sequence, the ByteLevel step prefixes every piece the Split steps made.
  json["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       Json::array({{{"type", "Split"}, {"pattern", {{"String", "|"}}}, {"behavior", "Isolated"}, {"invert", false}},
                    {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", false}}})}};
  tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(EncodeWith(**tokenizer, "hello|hello"), ElementsAre(260, 32, 124, 260));
  EXPECT_THAT(EncodeWith(**tokenizer, "a|b| c"), ElementsAre(32, 97, 32, 124, 32, 98, 32, 124, 32, 99));
  EXPECT_THAT(EncodeWith(**tokenizer, "||hello"), ElementsAre(32, 124, 32, 124, 260));
}

TEST(HfBpeTokenizer, ExposesTheTemplateProcessingTokensWithoutAddingThem) {
  Json json = BaseJson();
  json["added_tokens"] = Json::array({AddedToken(262, "<s>"), AddedToken(263, "</s>")});
  json["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "</s>", "type_id": 0}}],
      "pair": [],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [262], "tokens": ["<s>"]},
                         "</s>": {"id": "</s>", "ids": [263], "tokens": ["</s>"]}}})");
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer =
      Create(json, R"({"bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "</s>",
                       "pad_token": null})");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const HfBpeTokenizer& t = **tokenizer;
  EXPECT_THAT(EncodeWith(t, "hello"), ElementsAre(259));  // add_special_tokens=false
  EXPECT_THAT(t.TextPrefixIds(), ElementsAre(262));       // what add_special_tokens=true adds: [262, 259, 263]
  EXPECT_THAT(t.TextSuffixIds(), ElementsAre(263));
  EXPECT_EQ(t.BosId(), 262);
  EXPECT_EQ(t.EosId(), 263);
  EXPECT_EQ(t.PadId(), std::nullopt);
  EXPECT_TRUE(t.AddsBosToText());

  // Sequence [ByteLevel, TemplateProcessing], as newer Llama 3 files have.
  json["post_processor"] = {{"type", "Sequence"},
                            {"processors", Json::array({{{"type", "ByteLevel"}}, json["post_processor"]})}};
  tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT((*tokenizer)->TextPrefixIds(), ElementsAre(262));
  EXPECT_FALSE((*tokenizer)->AddsBosToText());  // no tokenizer_config.json, so no BosId
}

TEST(HfBpeTokenizer, KeepsTheLastRankOfARepeatedMergeAndAcceptsStringMerges) {
  Json json = BaseJson();
  Json merges = Json::array();
  for (const Json& pair : json["model"]["merges"])
    merges.push_back(pair[0].get<std::string>() + " " + pair[1].get<std::string>());
  merges.insert(merges.begin(), "#version: 0.2");
  json["model"]["merges"] = merges;
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->NumMerges(), 6u);
  EXPECT_THAT(EncodeWith(**tokenizer, " hello"), ElementsAre(260));
}

TEST(HfBpeTokenizer, IgnoreMergesTakesAVocabularyPieceWhole) {
  Json json = BaseJson();
  // "hel" + "lo" could never come from the merges; with ignore_merges the piece "hello" is still one token.
  json["model"]["merges"] = Json::array({Json::array({"h", "e"})});
  json["model"]["ignore_merges"] = true;
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_THAT(EncodeWith(**tokenizer, "hello"), ElementsAre(259));
  EXPECT_THAT(EncodeWith(**tokenizer, "hellos"), ElementsAre(256, 108, 108, 111, 115));
}

TEST(HfBpeTokenizer, LoadsGpt2AsATokenizerJsonAndEncodesItsFixtureCases) {
  // GPT-2's vocabulary in Hugging Face's tokenizer.json layout (what GPT2TokenizerFast saves).
  const Json encoder = Json::parse(*util::ReadFile(testing::Gpt2Dir() + "/encoder.json"));
  const std::string vocab_bpe = *util::ReadFile(testing::Gpt2Dir() + "/vocab.bpe");
  Json merges = Json::array();
  size_t start = 0;
  while (start < vocab_bpe.size()) {
    size_t end = vocab_bpe.find('\n', start);
    if (end == std::string::npos) end = vocab_bpe.size();
    const std::string line = vocab_bpe.substr(start, end - start);
    if (!line.empty() && line[0] != '#') merges.push_back(line);
    start = end + 1;
  }
  Json json = BaseJson();
  json["model"]["vocab"] = encoder;
  json["model"]["merges"] = merges;
  json["added_tokens"] = Json::array({AddedToken(50256, "<|endoftext|>")});
  absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json, R"({"eos_token": "<|endoftext|>"})");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->EosId(), 50256);
  const Json cases = Json::parse(*util::ReadFile(testing::FixturesDir() + "/gpt2-bpe-cases.json"));
  ASSERT_FALSE(cases.empty());
  for (const Json& c : cases) {
    const std::string text = c.at("text").get<std::string>();
    SCOPED_TRACE(text.substr(0, 60));
    EXPECT_EQ(EncodeWith(**tokenizer, text), c.at("ids").get<std::vector<int32_t>>());
    EXPECT_EQ(*(*tokenizer)->Decode(c.at("ids").get<std::vector<int32_t>>()), text);
  }
}

TEST(HfBpeTokenizer, LoadTokenizerTellsHuggingFaceFilesFromOurOwn) {
  const std::string dir = testing::MakeTempDir();
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer.json", BaseJson().dump()).ok());
  ASSERT_TRUE(util::WriteFileAtomically(dir + "/tokenizer_config.json", R"({"eos_token": "hello"})").ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tokenizer = LoadTokenizer(dir);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  EXPECT_EQ((*tokenizer)->Kind(), kHfBpeKind);
  EXPECT_EQ((*tokenizer)->EosId(), 259);
}

// Each mutation of BaseJson() and the message that refuses it.
struct Refusal {
  const char* name;
  void (*mutate)(Json&);
  const char* message;
};

class HfBpeTokenizerRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(HfBpeTokenizerRefusal, RefusesAtLoadNamingTheFileAndField) {
  Json json = BaseJson();
  GetParam().mutate(json);
  const absl::Status status = HfBpeTokenizer::Create(json.dump(), "", "m/tokenizer.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Features, HfBpeTokenizerRefusal,
    ::testing::Values(
        Refusal{"OtherModel", [](Json& j) { j["model"]["type"] = "Unigram"; },
                "m/tokenizer.json: model.type is \"Unigram\"; only \"BPE\" is supported"},
        Refusal{"ByteFallback", [](Json& j) { j["model"]["byte_fallback"] = true; },
                "m/tokenizer.json: model.byte_fallback is true; byte fallback is not supported"},
        Refusal{"Dropout", [](Json& j) { j["model"]["dropout"] = 0.1; },
                "m/tokenizer.json: model.dropout is 0.1; only null or 0 (no BPE dropout) is supported"},
        Refusal{"SubwordPrefix", [](Json& j) { j["model"]["continuing_subword_prefix"] = "##"; },
                "m/tokenizer.json: model.continuing_subword_prefix is \"##\"; only null or \"\" is supported"},
        Refusal{"SparseIds", [](Json& j) { j["model"]["vocab"]["far"] = 2000000000; },
                "m/tokenizer.json: model.vocab has ids up to 2000000000 for only 263 tokens"},
        Refusal{"MissingByteToken", [](Json& j) { j["model"]["vocab"].erase("\xC4\x80"); },
                "m/tokenizer.json: model.vocab lacks the byte-level token \"\xC4\x80\" for byte 0x00"},
        Refusal{"MergeOutOfVocabulary",
                [](Json& j) {
                  j["model"]["merges"].push_back(Json::array({"x", "y"}));
                },
                "m/tokenizer.json: model.merges[6] uses the token \"xy\", which is not in model.vocab"},
        Refusal{"BadMergeString", [](Json& j) { j["model"]["merges"].push_back("h e l"); },
                "m/tokenizer.json: model.merges[6] is \"h e l\", expected two tokens separated by one space"},
        Refusal{"Lowercase",
                [](Json& j) {
                  j["normalizer"] = {{"type", "Lowercase"}};
                },
                "m/tokenizer.json: normalizer.type is \"Lowercase\"; supported normalizers: NFC, NFD, NFKC, NFKD "
                "and Sequence"},
        Refusal{"NormalizerInSequence",
                [](Json& j) {
                  j["normalizer"] = {{"type", "Sequence"},
                                     {"normalizers", Json::array({{{"type", "NFC"}}, {{"type", "Strip"}}})}};
                },
                "m/tokenizer.json: normalizer.normalizers[1].type is \"Strip\""},
        Refusal{"Metaspace",
                [](Json& j) {
                  j["pre_tokenizer"] = {{"type", "Metaspace"}};
                },
                "m/tokenizer.json: pre_tokenizer.type is \"Metaspace\"; supported pre-tokenizers: Split, ByteLevel "
                "and Sequence"},
        Refusal{"NoPreTokenizer", [](Json& j) { j["pre_tokenizer"] = nullptr; },
                "m/tokenizer.json: pre_tokenizer is null; a ByteLevel pre-tokenizer is required"},
        Refusal{"SplitRemoved",
                [](Json& j) {
                  j["pre_tokenizer"] = {
                      {"type", "Sequence"},
                      {"pretokenizers", Json::array({{{"type", "Split"},
                                                      {"pattern", {{"Regex", "\\s+"}}},
                                                      {"behavior", "Removed"},
                                                      {"invert", false}},
                                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
                },
                "m/tokenizer.json: pre_tokenizer.pretokenizers[0].behavior is \"Removed\"; only \"Isolated\" is "
                "supported"},
        Refusal{"SplitInverted",
                [](Json& j) {
                  j["pre_tokenizer"] = {
                      {"type", "Sequence"},
                      {"pretokenizers", Json::array({{{"type", "Split"},
                                                      {"pattern", {{"Regex", "\\s+"}}},
                                                      {"behavior", "Isolated"},
                                                      {"invert", true}},
                                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
                },
                "m/tokenizer.json: pre_tokenizer.pretokenizers[0].invert is true; only false is supported"},
        Refusal{"WordBoundaryRegex",
                [](Json& j) {
                  j["pre_tokenizer"] = {
                      {"type", "Sequence"},
                      {"pretokenizers", Json::array({{{"type", "Split"},
                                                      {"pattern", {{"Regex", "\\w+|."}}},
                                                      {"behavior", "Isolated"},
                                                      {"invert", false}},
                                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
                },
                "m/tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex: the construct \"\\\\w\" at byte 0 "
                "of the pattern is not supported"},
        Refusal{"EmptyMatchRegex",
                [](Json& j) {
                  j["pre_tokenizer"] = {
                      {"type", "Sequence"},
                      {"pretokenizers", Json::array({{{"type", "Split"},
                                                      {"pattern", {{"Regex", "a*"}}},
                                                      {"behavior", "Isolated"},
                                                      {"invert", false}},
                                                     {{"type", "ByteLevel"}, {"use_regex", false}}})}};
                },
                "m/tokenizer.json: pre_tokenizer.pretokenizers[0].pattern.Regex can match the empty string"},
        Refusal{"SplitAfterByteLevel",
                [](Json& j) {
                  j["pre_tokenizer"] = {{"type", "Sequence"},
                                        {"pretokenizers", Json::array({{{"type", "ByteLevel"}, {"use_regex", false}},
                                                                       {{"type", "Split"},
                                                                        {"pattern", {{"String", " "}}},
                                                                        {"behavior", "Isolated"},
                                                                        {"invert", false}}})}};
                },
                "m/tokenizer.json: pre_tokenizer.pretokenizers[1] (\"Split\") comes after the ByteLevel"},
        Refusal{"SingleWord",
                [](Json& j) {
                  Json token = AddedToken(262, "<x>");
                  token["single_word"] = true;
                  j["added_tokens"].push_back(token);
                },
                "m/tokenizer.json: added_tokens[0].single_word is true; single-word added tokens are not supported"},
        Refusal{"AddedIdMismatch", [](Json& j) { j["added_tokens"].push_back(AddedToken(300, "<x>")); },
                "m/tokenizer.json: added_tokens[0].id is 300 but tokenizers would give \"<x>\" the id 262"},
        Refusal{"DuplicateAdded",
                [](Json& j) {
                  j["added_tokens"].push_back(AddedToken(262, "<x>"));
                  j["added_tokens"].push_back(AddedToken(263, "<x>"));
                },
                "m/tokenizer.json: added_tokens[1] repeats the content \"<x>\" of an earlier added token"},
        Refusal{"NoDecoder", [](Json& j) { j["decoder"] = nullptr; },
                "m/tokenizer.json: decoder is null; a ByteLevel decoder is required"},
        Refusal{"WordPieceDecoder",
                [](Json& j) {
                  j["decoder"] = {{"type", "WordPiece"}};
                },
                "m/tokenizer.json: decoder.type is \"WordPiece\"; only \"ByteLevel\" is supported"},
        Refusal{"UnknownPostProcessor",
                [](Json& j) {
                  j["post_processor"] = {{"type", "Fancy"}};
                },
                "m/tokenizer.json: post_processor.type is \"Fancy\"; supported post-processors:"},
        Refusal{"TemplateWithoutSequence",
                [](Json& j) {
                  j["post_processor"] = {{"type", "TemplateProcessing"}, {"single", Json::array()}};
                },
                "m/tokenizer.json: post_processor.single has no {\"Sequence\": {\"id\": \"A\"}}"},
        Refusal{"NoModel", [](Json& j) { j.erase("model"); }, "m/tokenizer.json: model is missing"}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return std::string(info.param.name); });

// Every JSON value of a file, by pointer to its slot, for mutation.
void CollectSlots(Json& node, std::vector<Json*>* slots) {
  slots->push_back(&node);
  if (node.is_object() || node.is_array()) {
    // Vocabularies are large; a few of their entries are enough.
    size_t taken = 0;
    for (auto& child : node) {
      if (++taken > 40) break;
      CollectSlots(child, slots);
    }
  }
}

TEST(HfBpeTokenizer, SurvivesMutatedFilesWithoutCrashing) {
  Json base = BaseJson();
  base["normalizer"] = {{"type", "NFC"}};
  base["added_tokens"] = Json::array({AddedToken(262, "<s>", true, true, true)});
  base["post_processor"] = Json::parse(R"({"type": "TemplateProcessing",
      "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
      "special_tokens": {"<s>": {"id": "<s>", "ids": [262], "tokens": ["<s>"]}}})");
  const std::vector<Json> replacements = {
      nullptr, -1, 0, 2147483647, 1e300, "x", "", true, Json::array(), Json::object(), Json::array({"a", "b"}), "\\w"};
  std::mt19937 gen(3);  // fixed sequence: tests are deterministic
  int loaded = 0;
  for (int trial = 0; trial < 1500; ++trial) {
    Json json = base;
    std::vector<Json*> slots;
    CollectSlots(json, &slots);
    for (int k = 0; k < 2; ++k) {
      *slots[Uniform(gen, 1, slots.size())] = replacements[Uniform(gen, 0, replacements.size())];
      slots.clear();
      CollectSlots(json, &slots);
    }
    absl::StatusOr<std::unique_ptr<HfBpeTokenizer>> tokenizer = Create(json, R"({"eos_token": "<s>"})");
    if (!tokenizer.ok()) {
      EXPECT_EQ(tokenizer.status().code(), absl::StatusCode::kInvalidArgument) << tokenizer.status();
      // Refused by the parser's own checks, not by the safety net around it.
      EXPECT_THAT(std::string(tokenizer.status().message()), ::testing::Not(HasSubstr("unexpected JSON content")));
      continue;
    }
    ++loaded;
    absl::StatusOr<std::vector<int32_t>> ids = (*tokenizer)->Encode("hello <s> w\xC3\xB6rld \xFF");
    ASSERT_TRUE(ids.ok()) << ids.status();
    for (const int32_t id : *ids) EXPECT_TRUE(id >= 0 && id < (*tokenizer)->VocabSize());
  }
  EXPECT_GT(loaded, 0);
}

TEST(HfBpeTokenizer, RefusesAnUnknownSpecialTokenInTheConfig) {
  const absl::Status status =
      HfBpeTokenizer::Create(BaseJson().dump(), R"({"eos_token": "<|nope|>"})", "tokenizer.json", "m/cfg.json")
          .status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(),
            "m/cfg.json: eos_token is \"<|nope|>\", which is neither an added token nor in the vocabulary");
}

TEST(HfBpeTokenizer, RefusesInvalidJsonNamingTheFile) {
  const absl::Status status = HfBpeTokenizer::Create("{\"model\": ", "", "m/tokenizer.json").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("m/tokenizer.json: not valid JSON"));
}

}  // namespace
}  // namespace rlhf::tokenizer
