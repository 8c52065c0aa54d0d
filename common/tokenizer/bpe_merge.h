// The merge step of byte-level BPE, on token ids. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_BPE_MERGE_H_
#define RLHF_COMMON_TOKENIZER_BPE_MERGE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace rlhf::tokenizer::internal {

// The merges of a BPE vocabulary: the pair of ids (left, right) merges into `merged` with priority `rank` (lower
// merges first; rank is the line's position in vocab.bpe). Immutable after construction; safe to share.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t merged;
  };

  // Adds a merge; returns false (and keeps the earlier one) when the pair is already there.
  bool Add(int32_t left, int32_t right, int32_t rank, int32_t merged);

  // Adds a merge, replacing an earlier one of the same pair (Hugging Face tokenizers keeps the last).
  void Put(int32_t left, int32_t right, int32_t rank, int32_t merged);

  void Reserve(size_t n) { merges_.reserve(n); }

  // The merge of (left, right), or nullptr.
  const Merge* Find(int32_t left, int32_t right) const {
    const auto it = merges_.find(Key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  size_t size() const { return merges_.size(); }

 private:
  static uint64_t Key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

  absl::flat_hash_map<uint64_t, Merge> merges_;
};

// Applies `table` to `symbols` in place, exactly as GPT-2's encoder.py `bpe()`: repeatedly take the adjacent pair of
// lowest rank and merge all its occurrences left to right, until no adjacent pair has a merge. O(n^2) in the
// number of symbols: for short words.
void ApplyMergesQuadratic(const MergeTable& table, std::vector<int32_t>* symbols);

// Same result as ApplyMergesQuadratic in O(n log n), with a heap of candidate pairs ordered by (rank, position).
// The results agree whenever every merge's product only takes part in merges of higher rank than its own, which
// holds for every vocabulary BPE training produces (GPT-2's included). For long words.
void ApplyMergesHeap(const MergeTable& table, std::vector<int32_t>* symbols);

// ApplyMergesQuadratic for words of up to this many symbols, ApplyMergesHeap above.
inline constexpr size_t kHeapMergeMinSymbols = 48;

inline void ApplyMerges(const MergeTable& table, std::vector<int32_t>* symbols) {
  if (symbols->size() < kHeapMergeMinSymbols) {
    ApplyMergesQuadratic(table, symbols);
  } else {
    ApplyMergesHeap(table, symbols);
  }
}

}  // namespace rlhf::tokenizer::internal

#endif  // RLHF_COMMON_TOKENIZER_BPE_MERGE_H_
