#include "common/tokenizer/regex_splitter.h"

#include <string>
#include <vector>

#include "common/tokenizer/utf8.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::tokenizer::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Qwen2 / Qwen3's pre-tokenisation pattern (Llama 3's has \p{N}{1,3} for \p{N}).
constexpr char kQwenPattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::unique_ptr<RegexSplitter> Splitter(const std::string& oniguruma) {
  absl::StatusOr<std::string> pcre2 = OnigurumaToPcre2(oniguruma);
  EXPECT_TRUE(pcre2.ok()) << pcre2.status();
  absl::StatusOr<std::unique_ptr<RegexSplitter>> splitter = RegexSplitter::Create(*pcre2, "test pattern");
  EXPECT_TRUE(splitter.ok()) << splitter.status();
  return splitter.ok() ? *std::move(splitter) : nullptr;
}

std::vector<std::string> Pieces(const RegexSplitter& splitter, absl::string_view text) {
  std::vector<std::string> pieces;
  EXPECT_TRUE(splitter.Split(text, [&](absl::string_view piece) { pieces.emplace_back(piece); }).ok());
  return pieces;
}

TEST(OnigurumaToPcre2, WhiteSpaceIsExactlyUnicodeWhiteSpace) {
  // Oniguruma's \s is Unicode White_Space: U+0085 is in it, U+FEFF and U+200B are not (PCRE2's own \s differs).
  const std::unique_ptr<RegexSplitter> space = Splitter(R"(\s)");
  const std::unique_ptr<RegexSplitter> non_space = Splitter(R"(\S+)");
  ASSERT_NE(space, nullptr);
  ASSERT_NE(non_space, nullptr);
  int white = 0;
  for (uint32_t cp = 0; cp < 0x110000; ++cp) {
    if (cp >= 0xD800 && cp <= 0xDFFF) continue;
    std::string text = "\x01";
    AppendUtf8(cp, &text);
    text += "\x01";
    // A match is isolated between the two \x01 (3 pieces); no match leaves the text whole.
    const bool matched = Pieces(*space, text).size() == 3;
    ASSERT_EQ(matched, IsUnicodeWhiteSpace(cp)) << "U+" << std::hex << cp;
    // \S+ takes the whole text unless cp is white space, which then stands between two matches.
    ASSERT_EQ(Pieces(*non_space, text).size(), matched ? 3u : 1u) << "U+" << std::hex << cp;
    white += matched;
  }
  EXPECT_EQ(white, 25);  // the 25 White_Space code points of Unicode
}

TEST(OnigurumaToPcre2, SplitsQwenTextAsTokenizersDoes) {
  const std::unique_ptr<RegexSplitter> splitter = Splitter(kQwenPattern);
  ASSERT_NE(splitter, nullptr);
  EXPECT_THAT(Pieces(*splitter, "I'm here, THEY'RE 123!"),
              ElementsAre("I", "'m", " here", ",", " THEY", "'RE", " ", "1", "2", "3", "!"));
  EXPECT_THAT(Pieces(*splitter, "a  b\n\n c"), ElementsAre("a", " ", " b", "\n\n", " c"));
  // U+0085 is white space (it joins the space before it); U+FEFF is not (it is taken as punctuation).
  EXPECT_THAT(Pieces(*splitter, "x \xC2\x85 y"), ElementsAre("x", " \xC2\x85", " y"));
  EXPECT_THAT(Pieces(*splitter, "x \xEF\xBB\xBFy"), ElementsAre("x", " \xEF\xBB\xBF", "y"));
}

TEST(RegexSplitter, KeepsInvalidUtf8InPiecesOfItsOwn) {
  const std::unique_ptr<RegexSplitter> splitter = Splitter(kQwenPattern);
  ASSERT_NE(splitter, nullptr);
  EXPECT_THAT(Pieces(*splitter, "ab\xFF\xFE cd\xC3"), ElementsAre("ab", "\xFF\xFE", " cd", "\xC3"));
  EXPECT_THAT(Pieces(*splitter, "\x80"), ElementsAre("\x80"));
  EXPECT_THAT(Pieces(*splitter, ""), ElementsAre());
}

TEST(OnigurumaToPcre2, TranslatesTheConstructsWhoseMeaningDiffers) {
  EXPECT_EQ(*OnigurumaToPcre2(R"(a.b)"), R"(a[^\n]b)");
  EXPECT_EQ(*OnigurumaToPcre2(R"(\v\u00e9)"), R"(\x{0b}\x{00e9})");
  EXPECT_EQ(*OnigurumaToPcre2(R"([\p{L}\d_]+(?i:ab)(?=x)(?<!y)\p{N}{1,3})"),
            R"([\p{L}\d_]+(?i:ab)(?=x)(?<!y)\p{N}{1,3})");
}

TEST(OnigurumaToPcre2, RefusesWhatItCannotTranslateNamingTheConstruct) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"(\w+)", R"(the construct "\\w" at byte 0 of the pattern is not supported)"},
      {R"(a\b)", R"(the construct "\\b" at byte 1)"},
      {R"(\h)", R"("\\h")"},
      {R"([^\S])", R"x("\\S" at byte 2 of the pattern is not supported (a negated class inside a character class))x"},
      {R"(^a)", R"("^" at byte 0)"},
      {R"(a$)", R"("$" at byte 1)"},
      {R"([[:alpha:]])", R"("[" at byte 1)"},
      {R"([a-z&&[^b]])", R"("&&" at byte 4)"},
      {R"(a{,3})", R"("{," at byte 1)"},
      {R"(a{1,3}+)", R"("{1,3}+" at byte 1)"},
      {R"((?m)a)", R"x("(?m)" at byte 0)x"},
      {R"((?#c)a)", R"("(?#c" at byte 0)"},
      {R"([a)", R"(a character class is not closed)"},
      {R"(a\)", R"(a lone backslash)"},
      {R"(\1)", R"("\\1")"},
  };
  for (const auto& [pattern, message] : cases) {
    const absl::Status status = OnigurumaToPcre2(pattern).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << pattern;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message)) << pattern;
  }
}

TEST(RegexSplitter, RefusesPatternsThatMatchTheEmptyString) {
  const absl::Status status = RegexSplitter::Create("a*", "the test pattern").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "the test pattern can match the empty string, which is not supported");
  EXPECT_THAT(std::string(RegexSplitter::Create("(a", "p").status().message()), HasSubstr("p does not compile"));
}

TEST(QuotePcre2, MatchesTheLiteralText) {
  absl::StatusOr<std::unique_ptr<RegexSplitter>> splitter =
      RegexSplitter::Create(QuotePcre2("a.b*[c]\\ \t"), "literal");
  ASSERT_TRUE(splitter.ok()) << splitter.status();
  EXPECT_THAT(Pieces(**splitter, "xa.b*[c]\\ \tyaXb"), ElementsAre("x", "a.b*[c]\\ \t", "yaXb"));
}

}  // namespace
}  // namespace rlhf::tokenizer::internal
