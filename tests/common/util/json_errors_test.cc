#include "common/util/json_errors.h"

#include <nlohmann/json.hpp>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace rlhf::util {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string ParseError(const std::string& text) {
  try {
    const nlohmann::json parsed = nlohmann::json::parse(text);
    return parsed.dump();  // not reached for the texts below
  } catch (const nlohmann::json::exception& e) {
    return JsonErrorText(e.what());
  }
  return "";
}

// An error about a file never quotes what the file holds (a caller could read any file through error messages).
TEST(JsonErrorText, KeepsThePositionAndDropsTheBytesTheParserRead) {
  const std::string secret = "\"password=hunter2-and-much-more-secret-text\" trailing";
  const std::string text = ParseError(secret);
  EXPECT_THAT(text, HasSubstr("parse error at line 1"));
  EXPECT_THAT(text, Not(HasSubstr("hunter2")));
  EXPECT_THAT(text, Not(HasSubstr("json.exception")));
}

TEST(JsonErrorText, IsAsciiWhateverTheInput) {
  const std::string text = ParseError(std::string("{\"\xff\xfe\x80\": 1}"));
  ASSERT_FALSE(text.empty());
  for (char c : text) EXPECT_LT(static_cast<unsigned char>(c), 0x80u);
}

}  // namespace
}  // namespace rlhf::util
