#include "common/tokenizer/added_token_matcher.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::tokenizer::internal {
namespace {

using ::testing::ElementsAre;

// The split as strings: text stretches as they are, tokens as "#id".
std::vector<std::string> SplitToStrings(const AddedTokenMatcher& matcher, absl::string_view text) {
  std::vector<std::string> out;
  const absl::Status status = matcher.Split(
      text,
      [&](absl::string_view piece) {
        out.emplace_back(piece);
        return absl::OkStatus();
      },
      [&](int32_t id) { out.push_back("#" + std::to_string(id)); });
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

TEST(AddedTokenMatcher, TakesTheLeftmostThenTheLongestMatch) {
  const AddedTokenMatcher matcher({{"<a>", 1}, {"<a><b>", 2}, {"b>", 3}, {"<", 4}});
  EXPECT_THAT(SplitToStrings(matcher, "x<a><b>y"), ElementsAre("x", "#2", "y"));
  EXPECT_THAT(SplitToStrings(matcher, "<a><c>"), ElementsAre("#1", "#4", "c>"));
  EXPECT_THAT(SplitToStrings(matcher, "ab>b"), ElementsAre("a", "#3", "b"));
  EXPECT_THAT(SplitToStrings(matcher, ""), ElementsAre());
}

TEST(AddedTokenMatcher, StripsWhiteSpaceOnlyWhereAsked) {
  AddedTokenPattern left{"[L]", 1};
  left.lstrip = true;
  AddedTokenPattern right{"[R]", 2};
  right.rstrip = true;
  const AddedTokenMatcher matcher({left, right});
  EXPECT_THAT(SplitToStrings(matcher, "a \t[L] b"), ElementsAre("a", "#1", " b"));
  EXPECT_THAT(SplitToStrings(matcher, "a [R] \n b"), ElementsAre("a ", "#2", "b"));
  EXPECT_THAT(SplitToStrings(matcher, "[R]  [L]"), ElementsAre("#2", "#1"));
  // Invalid UTF-8 is not white space.
  EXPECT_THAT(SplitToStrings(matcher, "\xFF [L]"), ElementsAre("\xFF", "#1"));
}

TEST(AddedTokenMatcher, PassesOnTheFirstErrorOfTheTextCallback) {
  const AddedTokenMatcher matcher({{"<a>", 1}});
  int calls = 0;
  const absl::Status status = matcher.Split(
      "x<a>y",
      [&](absl::string_view) {
        ++calls;
        return absl::ResourceExhaustedError("stop");
      },
      [](int32_t) {});
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace rlhf::tokenizer::internal
