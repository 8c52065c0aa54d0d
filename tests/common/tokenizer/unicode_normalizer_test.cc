#include "common/tokenizer/unicode_normalizer.h"

#include "gtest/gtest.h"

namespace rlhf::tokenizer::internal {
namespace {

TEST(NormalizeUnicode, ComposesAndDecomposes) {
  EXPECT_EQ(*NormalizeUnicode("cafe\xCC\x81", NormalizationForm::kNfc), "caf\xC3\xA9");
  EXPECT_EQ(*NormalizeUnicode("caf\xC3\xA9", NormalizationForm::kNfd), "cafe\xCC\x81");
  // Compatibility forms fold the ligature "ﬁ"; canonical ones keep it.
  EXPECT_EQ(*NormalizeUnicode("\xEF\xAC\x81", NormalizationForm::kNfkc), "fi");
  EXPECT_EQ(*NormalizeUnicode("\xEF\xAC\x81", NormalizationForm::kNfc), "\xEF\xAC\x81");
  // Canonical reordering of combining marks: dot below (ccc 220) before dot above (ccc 230).
  EXPECT_EQ(*NormalizeUnicode("q\xCC\x87\xCC\xA3", NormalizationForm::kNfc), "q\xCC\xA3\xCC\x87");
}

TEST(NormalizeUnicode, KeepsInvalidBytesAndNormalizesAroundThem) {
  EXPECT_EQ(*NormalizeUnicode("e\xCC\x81\xFF"
                              "e\xCC\x81",
                              NormalizationForm::kNfc),
            "\xC3\xA9\xFF\xC3\xA9");
  // The invalid byte separates "e" from its combining accent, so they do not compose.
  EXPECT_EQ(*NormalizeUnicode("e\xFF\xCC\x81", NormalizationForm::kNfc), "e\xFF\xCC\x81");
  EXPECT_EQ(*NormalizeUnicode("", NormalizationForm::kNfc), "");
  EXPECT_EQ(*NormalizeUnicode(std::string("a\0b", 3), NormalizationForm::kNfc), std::string("a\0b", 3));
}

TEST(NormalizationFormByName, KnowsTheFourForms) {
  EXPECT_EQ(NormalizationFormByName("NFC"), NormalizationForm::kNfc);
  EXPECT_EQ(NormalizationFormByName("NFKD"), NormalizationForm::kNfkd);
  EXPECT_EQ(NormalizationFormByName("Lowercase"), std::nullopt);
}

}  // namespace
}  // namespace rlhf::tokenizer::internal
