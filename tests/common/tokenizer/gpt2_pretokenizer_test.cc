#include "common/tokenizer/gpt2_pretokenizer.h"

#include <string>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::tokenizer::internal {
namespace {

using ::testing::ElementsAre;

std::vector<std::string> Split(absl::string_view text) {
  static const Gpt2PreTokenizer* const pre_tokenizer = Gpt2PreTokenizer::Create()->release();
  std::vector<std::string> pieces;
  const absl::Status status =
      pre_tokenizer->Split(text, [&](absl::string_view piece) { pieces.emplace_back(piece); });
  EXPECT_TRUE(status.ok()) << status;
  return pieces;
}

TEST(Gpt2PreTokenizer, SplitsWordsWithTheirLeadingSpace) {
  EXPECT_THAT(Split("Hello world"), ElementsAre("Hello", " world"));
  EXPECT_THAT(Split(""), ElementsAre());
}

TEST(Gpt2PreTokenizer, SplitsLowercaseContractionsOnly) {
  EXPECT_THAT(Split("I'm they'll it's we've DON'T"),
              ElementsAre("I", "'m", " they", "'ll", " it", "'s", " we", "'ve", " DON", "'", "T"));
}

TEST(Gpt2PreTokenizer, KeepsTheLastSpaceOfARunForTheNextWord) {
  EXPECT_THAT(Split("a   b"), ElementsAre("a", "  ", " b"));
  EXPECT_THAT(Split("a  "), ElementsAre("a", "  "));
  EXPECT_THAT(Split("tabs\tand\nnew\n\nlines\r\n"),
              ElementsAre("tabs", "\t", "and", "\n", "new", "\n", "\n", "lines", "\r\n"));
}

TEST(Gpt2PreTokenizer, SeparatesLettersNumbersAndPunctuation) {
  EXPECT_THAT(Split("abc123 4.5!? ¡naïve 日本語"),
              ElementsAre("abc", "123", " 4", ".", "5", "!?", " ¡", "naïve", " 日本語"));
}

TEST(Gpt2PreTokenizer, UsesUnicodeWhiteSpace) {
  // U+3000 (ideographic space) and U+00A0 (no-break space) are white space, as in Python's `regex`; only an ASCII
  // space joins the word after it.
  EXPECT_THAT(Split("a\xE3\x80\x80\xE3\x80\x80" "b"), ElementsAre("a", "\xE3\x80\x80", "\xE3\x80\x80", "b"));
  EXPECT_THAT(Split("a\xC2\xA0"), ElementsAre("a", "\xC2\xA0"));
}

TEST(Gpt2PreTokenizer, PutsInvalidUtf8InPiecesOfTheirOwn) {
  EXPECT_THAT(Split("ab\xFF\xFE" "cd"), ElementsAre("ab", "\xFF\xFE", "cd"));
  EXPECT_THAT(Split("\xC3"), ElementsAre("\xC3"));
  EXPECT_THAT(Split("x \x80"), ElementsAre("x", " ", "\x80"));
}

TEST(Gpt2PreTokenizer, PiecesTileAnyInput) {
  absl::BitGen gen(std::seed_seq{5});
  for (int trial = 0; trial < 500; ++trial) {
    std::string text(absl::Uniform(gen, 0, 300), '\0');
    for (char& c : text) {
      // Mostly ASCII, sometimes high bytes (some valid sequences, mostly not).
      c = static_cast<char>(absl::Bernoulli(gen, 0.8) ? absl::Uniform(gen, 0, 128) : absl::Uniform(gen, 128, 256));
    }
    const std::vector<std::string> pieces = Split(text);
    for (const std::string& piece : pieces) ASSERT_FALSE(piece.empty());
    ASSERT_EQ(absl::StrJoin(pieces, ""), text) << "trial " << trial;
  }
}

TEST(Gpt2PreTokenizer, HandlesMegabyteRunsOfWhiteSpace) {
  const std::string text = "a" + std::string(1 << 20, ' ') + "b" + std::string(1 << 20, '\n');
  const std::vector<std::string> pieces = Split(text);
  ASSERT_EQ(pieces.size(), 4u);
  EXPECT_EQ(pieces[1].size(), (1u << 20) - 1);
  EXPECT_EQ(pieces[2], " b");
  EXPECT_EQ(pieces[3].size(), 1u << 20);
}

}  // namespace
}  // namespace rlhf::tokenizer::internal
