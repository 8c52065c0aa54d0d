#include "common/tokenizer/bpe_merge.h"

#include <functional>
#include <queue>
#include <tuple>

namespace rlhf::tokenizer::internal {

bool MergeTable::Add(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  return merges_.try_emplace(Key(left, right), Merge{rank, merged}).second;
}

void MergeTable::Put(int32_t left, int32_t right, int32_t rank, int32_t merged) {
  merges_.insert_or_assign(Key(left, right), Merge{rank, merged});
}

void ApplyMergesQuadratic(const MergeTable& table, std::vector<int32_t>* symbols) {
  std::vector<int32_t>& s = *symbols;
  while (s.size() > 1) {
    const MergeTable::Merge* best = nullptr;
    int32_t left = 0, right = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const MergeTable::Merge* merge = table.Find(s[i], s[i + 1]);
      if (merge != nullptr && (best == nullptr || merge->rank < best->rank)) {
        best = merge;
        left = s[i];
        right = s[i + 1];
      }
    }
    if (best == nullptr) break;
    size_t out = 0;
    for (size_t in = 0; in < s.size();) {
      if (in + 1 < s.size() && s[in] == left && s[in + 1] == right) {
        s[out++] = best->merged;
        in += 2;
      } else {
        s[out++] = s[in++];
      }
    }
    s.resize(out);
  }
}

void ApplyMergesHeap(const MergeTable& table, std::vector<int32_t>* symbols) {
  std::vector<int32_t>& id = *symbols;
  const int32_t n = static_cast<int32_t>(id.size());
  if (n < 2) return;
  // A doubly linked list over the original positions; a merged pair lives on in its left node.
  std::vector<int32_t> prev(n), next(n);
  for (int32_t i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  // Candidates (rank, left position, left id, right id); stale ones are skipped when popped.
  using Candidate = std::tuple<int32_t, int32_t, int32_t, int32_t>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  const auto push = [&](int32_t left_pos) {
    if (left_pos < 0 || next[left_pos] < 0) return;
    const int32_t a = id[left_pos], b = id[next[left_pos]];
    if (const MergeTable::Merge* merge = table.Find(a, b)) heap.emplace(merge->rank, left_pos, a, b);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const auto [rank, pos, a, b] = heap.top();
    heap.pop();
    const int32_t right_pos = alive[pos] ? next[pos] : -1;
    if (right_pos < 0 || id[pos] != a || id[right_pos] != b) continue;  // stale
    id[pos] = table.Find(a, b)->merged;
    alive[right_pos] = false;
    next[pos] = next[right_pos];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    push(prev[pos]);
    push(pos);
  }
  int32_t out = 0;
  for (int32_t i = 0; i >= 0; i = next[i]) id[out++] = id[i];
  id.resize(out);
}

}  // namespace rlhf::tokenizer::internal
