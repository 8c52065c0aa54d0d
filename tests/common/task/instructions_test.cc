#include "common/task/instructions.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::task {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

int32_t Score(absl::string_view prompt, absl::string_view response, ResponseForm form = ResponseForm::kFinishedText) {
  absl::StatusOr<int32_t> score = TrueScore(prompt, response, form);
  EXPECT_TRUE(score.ok()) << score.status();
  return score.value_or(1);
}

TEST(TaskVocabulary, HasSixtyFiveDistinctWordsWithTheSpecialTokensFirst) {
  const std::vector<std::string> vocab = TaskVocabulary();
  EXPECT_EQ(vocab.size(), 65u);
  EXPECT_EQ(absl::flat_hash_set<std::string>(vocab.begin(), vocab.end()).size(), vocab.size());
  EXPECT_THAT(std::vector<std::string>(vocab.begin(), vocab.begin() + 5),
              ElementsAre("<pad>", "<bos>", "<eos>", "<unk>", ":"));
  EXPECT_EQ(LowerWords().size(), 24u);
}

TEST(TaskTokenizer, EncodesAPromptWithItsSeparatorAsOrdinaryText) {
  const std::unique_ptr<tokenizer::WordTokenizer> tokenizer = MakeTaskTokenizer();
  EXPECT_EQ(tokenizer->VocabSize(), 65);
  EXPECT_EQ(tokenizer->PadId(), 0);
  EXPECT_EQ(tokenizer->BosId(), 1);
  EXPECT_EQ(tokenizer->EosId(), 2);
  EXPECT_EQ(tokenizer->UnkId(), 3);
  // The generation service encodes prompt text with EncodeOrdinary: the separator must survive it.
  const std::vector<int32_t> ids = *tokenizer->EncodeOrdinary("reverse red egg cat :");
  ASSERT_EQ(ids.size(), 5u);
  EXPECT_EQ(ids.back(), *tokenizer->OrdinaryId(":"));
  for (const int32_t id : ids) EXPECT_FALSE(tokenizer->IsSpecial(id));
  EXPECT_EQ(*tokenizer->Decode(ids), "reverse red egg cat :");
}

TEST(Prompts, FormatAndParseRoundTrip) {
  Instruction list;
  list.family = Family::kList;
  list.count = 3;
  list.category = 0;
  EXPECT_EQ(FormatPrompt(list), "list 3 animal :");
  absl::StatusOr<Instruction> parsed = ParsePrompt("  list\t3 animal  :\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->family, Family::kList);
  EXPECT_EQ(parsed->count, 3);
  EXPECT_EQ(parsed->category, 0);

  Instruction upper;
  upper.family = Family::kUpper;
  upper.words = {"red", "egg", "cat"};
  EXPECT_EQ(FormatPrompt(upper), "upper red egg cat :");
  parsed = ParsePrompt("upper red egg cat :");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->family, Family::kUpper);
  EXPECT_THAT(parsed->words, ElementsAre("red", "egg", "cat"));
  EXPECT_THAT(ReferenceAnswer(*parsed), ElementsAre("RED", "EGG", "CAT"));
}

TEST(Prompts, ParseRejectsAnythingElseSayingWhy) {
  const auto message = [](absl::string_view prompt) {
    const absl::Status status = ParsePrompt(prompt).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << prompt;
    return std::string(status.message());
  };
  EXPECT_EQ(message(""), "prompt \"\" is not an instruction of the built-in task: it is empty");
  EXPECT_THAT(message("list 3 animal"), HasSubstr("it does not end with the separator \":\""));
  EXPECT_THAT(message("sort red egg :"), HasSubstr("it does not start with list, repeat, reverse or upper"));
  EXPECT_THAT(message("list 6 animal :"), HasSubstr("the count must be a digit from 1 to 5"));
  EXPECT_THAT(message("list 3 tree :"), HasSubstr("the category must be animal, color or food"));
  EXPECT_THAT(message("list 3 animal cat :"), HasSubstr("expected \"list <count> <category> :\""));
  EXPECT_THAT(message("repeat red :"), HasSubstr("expected 2 to 5 words before the separator, got 1"));
  EXPECT_THAT(message("repeat a b c d e f :"), HasSubstr("got 6"));
  EXPECT_THAT(message("upper red RED :"), HasSubstr("\"RED\" is not a word of the task"));
  EXPECT_THAT(message("upper red \xFF :"), HasSubstr("\"\\xff\" is not a word of the task"));
}

TEST(TrueScore, ListCountsLengthCategoryAndRepeats) {
  EXPECT_EQ(Score("list 3 animal :", "cat dog cow"), 0);
  EXPECT_EQ(Score("list 3 animal :", "owl bee fox"), 0);  // any three distinct animals, any order
  EXPECT_EQ(Score("list 3 animal :", "cat dog"), -1);
  EXPECT_EQ(Score("list 3 animal :", "cat dog cow pig"), -1);
  EXPECT_EQ(Score("list 3 animal :", "cat cat dog"), -1);          // a repeat
  EXPECT_EQ(Score("list 3 animal :", "cat red dog"), -1);          // another category
  EXPECT_EQ(Score("list 3 animal :", "CAT dog cow"), -1);          // upper case is not the word
  EXPECT_EQ(Score("list 3 animal :", "cat cat cat cat cat"), -6);  // 2 too long + 4 repeats
  EXPECT_EQ(Score("list 3 animal :", ""), -3);
  EXPECT_EQ(Score("list 1 food :", "tea"), 0);
  EXPECT_EQ(Score("list 2 color :", "red <unk>"), -1);
}

TEST(TrueScore, RepeatReverseAndUpperUseTheEditDistanceToTheAnswer) {
  EXPECT_EQ(Score("repeat red egg cat :", "red egg cat"), 0);
  EXPECT_EQ(Score("repeat red egg cat :", "red cat"), -1);          // a dropped word
  EXPECT_EQ(Score("repeat red egg cat :", "red egg egg cat"), -1);  // an extra word
  EXPECT_EQ(Score("repeat red egg cat :", "red egg dog"), -1);      // a substituted word
  EXPECT_EQ(Score("repeat red egg cat :", "cat egg red"), -2);
  EXPECT_EQ(Score("repeat red egg cat :", ""), -3);

  EXPECT_EQ(Score("reverse red egg cat :", "cat egg red"), 0);
  EXPECT_EQ(Score("reverse red egg cat :", "red egg cat"), -2);
  EXPECT_EQ(Score("reverse red egg :", "egg red egg"), -1);

  EXPECT_EQ(Score("upper red egg cat :", "RED EGG CAT"), 0);
  EXPECT_EQ(Score("upper red egg cat :", "RED egg CAT"), -1);
  EXPECT_EQ(Score("upper red egg cat :", "red egg cat"), -3);
  EXPECT_EQ(Score("upper red egg cat :", "RED EGG CAT CAT CAT"), -2);
}

TEST(TrueScore, GeneratedTextIsFinishedOnlyWithEos) {
  constexpr ResponseForm kGenerated = ResponseForm::kGeneratedText;
  EXPECT_EQ(Score("repeat red egg :", "red egg <eos>", kGenerated), 0);
  EXPECT_EQ(Score("repeat red egg :", "red egg<eos>", kGenerated), 0);
  EXPECT_EQ(Score("repeat red egg :", "red egg <eos> cat cat", kGenerated), 0);  // what follows EOS is not read
  EXPECT_EQ(Score("repeat red egg :", "red egg", kGenerated), -kUnfinishedPenalty);
  EXPECT_EQ(Score("repeat red egg :", "red egg red egg red egg", kGenerated), -4 - kUnfinishedPenalty);
  EXPECT_EQ(Score("list 2 food :", "<eos>", kGenerated), -2);
  // As finished text, the same words are a finished response.
  EXPECT_EQ(Score("repeat red egg :", "red egg"), 0);

  const Response response = ParseResponse(" red  egg <eos> x", kGenerated);
  EXPECT_THAT(response.words, ElementsAre("red", "egg"));
  EXPECT_TRUE(response.finished);
  EXPECT_TRUE(ParseResponse("red", ResponseForm::kFinishedText).finished);
  EXPECT_FALSE(ParseResponse("red", kGenerated).finished);
}

TEST(TrueScore, IsPerfectAndErrors) {
  EXPECT_TRUE(*IsPerfect("reverse cat dog :", "dog cat"));
  EXPECT_FALSE(*IsPerfect("reverse cat dog :", "cat dog"));
  EXPECT_FALSE(*IsPerfect("reverse cat dog :", "dog cat", ResponseForm::kGeneratedText));
  const absl::Status status = TrueScore("hello", "world").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("prompt \"hello\" is not an instruction"));
}

TEST(EditDistance, CountsInsertionsDeletionsAndSubstitutions) {
  using V = std::vector<std::string>;
  EXPECT_EQ(EditDistance(V{}, V{}), 0);
  EXPECT_EQ(EditDistance(V{"a", "b"}, V{}), 2);
  EXPECT_EQ(EditDistance(V{}, V{"a"}), 1);
  EXPECT_EQ(EditDistance(V{"a", "b", "c"}, V{"a", "c"}), 1);
  EXPECT_EQ(EditDistance(V{"a", "b", "c"}, V{"a", "x", "c"}), 1);
  EXPECT_EQ(EditDistance(V{"a", "b", "c"}, V{"c", "b", "a"}), 2);
  EXPECT_EQ(EditDistance(V{"k", "i", "t", "t", "e", "n"}, V{"s", "i", "t", "t", "i", "n", "g"}), 3);
}

}  // namespace
}  // namespace rlhf::task
