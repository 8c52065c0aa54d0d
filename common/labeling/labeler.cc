#include "common/labeling/labeler.h"

namespace rlhf::labeling {

std::vector<Preference> PreferencesFromRanks(const std::vector<int32_t>& ranks) {
  std::vector<Preference> out;
  const int32_t k = static_cast<int32_t>(ranks.size());
  for (int32_t i = 0; i < k; ++i) {
    for (int32_t j = i + 1; j < k; ++j) {
      if (ranks[i] < ranks[j]) out.push_back({i, j});
      if (ranks[j] < ranks[i]) out.push_back({j, i});
    }
  }
  return out;
}

}  // namespace rlhf::labeling
