#include "common/tokenizer/special_tokens.h"

#include "common/util/status_macros.h"

namespace rlhf::tokenizer::internal {

absl::Status SplitOnSpecialTokens(absl::string_view text, const std::vector<SpecialToken>& specials,
                                  absl::FunctionRef<absl::Status(absl::string_view)> on_text,
                                  absl::FunctionRef<void(int32_t)> on_special) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t best_at = absl::string_view::npos;
    const SpecialToken* best = nullptr;
    for (const SpecialToken& special : specials) {
      const size_t at = text.find(special.content, pos);
      if (at == absl::string_view::npos) continue;
      if (at < best_at || (at == best_at && special.content.size() > best->content.size())) {
        best_at = at;
        best = &special;
      }
    }
    if (best == nullptr) break;
    if (best_at > pos) RETURN_IF_ERROR(on_text(text.substr(pos, best_at - pos)));
    on_special(best->id);
    pos = best_at + best->content.size();
  }
  if (pos < text.size()) RETURN_IF_ERROR(on_text(text.substr(pos)));
  return absl::OkStatus();
}

}  // namespace rlhf::tokenizer::internal
