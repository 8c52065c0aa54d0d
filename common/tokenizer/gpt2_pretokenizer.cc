#include "common/tokenizer/gpt2_pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"

namespace rlhf::tokenizer::internal {
namespace {

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

}  // namespace

absl::StatusOr<std::unique_ptr<Gpt2PreTokenizer>> Gpt2PreTokenizer::Create() {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset,
                                   nullptr);
  if (code == nullptr) {
    return absl::InternalError(absl::StrCat("cannot compile GPT-2's pre-tokenisation pattern at offset ",
                                            error_offset, ": ", Pcre2ErrorMessage(error_code)));
  }
  // Without JIT (unsupported platform) pcre2_match interprets the pattern: slower, same result.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<Gpt2PreTokenizer>(new Gpt2PreTokenizer(code));
}

Gpt2PreTokenizer::~Gpt2PreTokenizer() { pcre2_code_free(code_); }

absl::Status Gpt2PreTokenizer::Split(absl::string_view text,
                                     absl::FunctionRef<void(absl::string_view)> on_piece) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(pcre2_match_data_create(1, nullptr));
  if (match_data == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    // The pattern has no nested repeats, so matching needs no deep backtracking: megabyte runs of one class
    // match on the JIT's default stack (tested). A failure here would be a resource limit, reported as such.
    const int rc = pcre2_match(code_, subject, text.size(), pos, 0, match_data.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) {
      // Only bytes outside any well-formed character are left.
      on_piece(text.substr(pos));
      break;
    }
    if (rc < 0) {
      return absl::ResourceExhaustedError(absl::StrCat("GPT-2 pre-tokenisation failed at byte ", pos, " of ",
                                                       text.size(), ": ", Pcre2ErrorMessage(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t start = ovector[0];
    // Every alternative of the pattern consumes at least one character; guard against an empty match anyway.
    const size_t end = ovector[1] > start ? ovector[1] : start + 1;
    if (start > pos) on_piece(text.substr(pos, start - pos));  // ill-formed UTF-8 between matches
    on_piece(text.substr(start, end - start));
    pos = end;
  }
  return absl::OkStatus();
}

}  // namespace rlhf::tokenizer::internal
