#include "common/tokenizer/bpe_merge.h"

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/util/file_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/common/tokenizer/test_env.h"

namespace rlhf::tokenizer::internal {
namespace {

using ::testing::ElementsAre;

// Ids 0..3 are "a", "b", "c", "d"; merges: (a, a) -> 10 rank 0, (10, 10) -> 11 rank 1, (b, c) -> 12 rank 2,
// (a, 12) -> 13 rank 3.
MergeTable SmallTable() {
  MergeTable table;
  table.Add(0, 0, 0, 10);
  table.Add(10, 10, 1, 11);
  table.Add(1, 2, 2, 12);
  table.Add(0, 12, 3, 13);
  return table;
}

std::vector<int32_t> Quadratic(const MergeTable& table, std::vector<int32_t> symbols) {
  ApplyMergesQuadratic(table, &symbols);
  return symbols;
}

std::vector<int32_t> Heap(const MergeTable& table, std::vector<int32_t> symbols) {
  ApplyMergesHeap(table, &symbols);
  return symbols;
}

TEST(MergeTable, KeepsTheFirstMergeOfARepeatedPair) {
  MergeTable table;
  EXPECT_TRUE(table.Add(1, 2, 0, 5));
  EXPECT_FALSE(table.Add(1, 2, 1, 6));
  ASSERT_NE(table.Find(1, 2), nullptr);
  EXPECT_EQ(table.Find(1, 2)->rank, 0);
  EXPECT_EQ(table.Find(1, 2)->merged, 5);
  EXPECT_EQ(table.Find(2, 1), nullptr);
  EXPECT_EQ(table.size(), 1u);
}

TEST(ApplyMerges, MergesAllOccurrencesOfAPairLeftToRight) {
  const MergeTable table = SmallTable();
  // a a a -> (aa) a: occurrences do not overlap and the leftmost wins.
  EXPECT_THAT(Quadratic(table, {0, 0, 0}), ElementsAre(10, 0));
  EXPECT_THAT(Heap(table, {0, 0, 0}), ElementsAre(10, 0));
  // a a a a -> (aa)(aa) -> (aaaa).
  EXPECT_THAT(Quadratic(table, {0, 0, 0, 0}), ElementsAre(11));
  EXPECT_THAT(Heap(table, {0, 0, 0, 0}), ElementsAre(11));
  // a b c: (b, c) first (rank 2), then (a, bc) (rank 3).
  EXPECT_THAT(Quadratic(table, {0, 1, 2}), ElementsAre(13));
  EXPECT_THAT(Heap(table, {0, 1, 2}), ElementsAre(13));
  // Nothing to merge.
  EXPECT_THAT(Quadratic(table, {3, 2, 1}), ElementsAre(3, 2, 1));
  EXPECT_THAT(Heap(table, {3, 2, 1}), ElementsAre(3, 2, 1));
  EXPECT_THAT(Heap(table, {}), ElementsAre());
  EXPECT_THAT(Heap(table, {0}), ElementsAre(0));
}

// GPT-2's merges over ids, read straight from the vocabulary files.
struct Gpt2Merges {
  MergeTable table;
  std::vector<int32_t> letter_ids;  // single-character tokens to build words from
};

const Gpt2Merges& LoadGpt2Merges() {
  static const Gpt2Merges* const merges = [] {
    auto* result = new Gpt2Merges();
    const nlohmann::json encoder = nlohmann::json::parse(*util::ReadFile(testing::Gpt2Dir() + "/encoder.json"));
    absl::flat_hash_map<std::string, int32_t> ids;
    for (const auto& [token, id] : encoder.items()) ids[token] = id.get<int32_t>();
    const std::string vocab_bpe = *util::ReadFile(testing::Gpt2Dir() + "/vocab.bpe");
    int32_t rank = 0;
    bool first = true;
    for (absl::string_view line : absl::StrSplit(vocab_bpe, '\n', absl::SkipEmpty())) {
      if (std::exchange(first, false)) continue;  // "#version: 0.2"
      const std::vector<std::string> parts = absl::StrSplit(line, ' ');
      result->table.Add(ids.at(parts[0]), ids.at(parts[1]), rank++, ids.at(parts[0] + parts[1]));
    }
    for (const char* letter : {"a", "b", "e", "t", "h", "s", "n", "r", "o", "l", "\xC4\xA0" /* Ġ, a space */}) {
      result->letter_ids.push_back(ids.at(letter));
    }
    return result;
  }();
  return *merges;
}

TEST(ApplyMerges, HeapAgreesWithQuadraticOnGpt2Merges) {
  const Gpt2Merges& merges = LoadGpt2Merges();
  ASSERT_EQ(merges.table.size(), 50000u);
  absl::BitGen gen(std::seed_seq{1});
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<int32_t> word(absl::Uniform(gen, 1, 150));
    // Few distinct letters, so that words are full of mergeable pairs and repeats.
    const size_t alphabet = absl::Uniform<size_t>(gen, 1, merges.letter_ids.size() + 1);
    for (int32_t& id : word) id = merges.letter_ids[absl::Uniform<size_t>(gen, 0, alphabet)];
    ASSERT_EQ(Quadratic(merges.table, word), Heap(merges.table, word)) << "trial " << trial;
  }
}

}  // namespace
}  // namespace rlhf::tokenizer::internal
