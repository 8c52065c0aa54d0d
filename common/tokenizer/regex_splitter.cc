#include "common/tokenizer/regex_splitter.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <memory>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/utf8.h"

namespace rlhf::tokenizer::internal {
namespace {

// Unicode White_Space (utf8.h's IsUnicodeWhiteSpace) as the inside of a PCRE2 character class.
constexpr char kWhiteSpaceRanges[] =
    R"(\x{9}-\x{d}\x{20}\x{85}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000})";

std::string Pcre2ErrorMessage(int code) {
  PCRE2_UCHAR buffer[256];
  const int n = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (n < 0) return absl::StrCat("PCRE2 error ", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(n));
}

absl::Status Unsupported(absl::string_view construct, size_t offset, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("the construct ", QuoteForMessage(construct), " at byte ", offset,
                                                 " of the pattern is not supported (", why, ")"));
}

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// The length of a valid interval quantifier `{n}`, `{n,}` or `{n,m}` starting at pattern[pos] == '{', or 0.
size_t IntervalLength(absl::string_view pattern, size_t pos) {
  size_t i = pos + 1;
  const size_t digits_begin = i;
  while (i < pattern.size() && IsDigit(pattern[i])) ++i;
  if (i == digits_begin) return 0;
  if (i < pattern.size() && pattern[i] == ',') {
    ++i;
    while (i < pattern.size() && IsDigit(pattern[i])) ++i;
  }
  if (i < pattern.size() && pattern[i] == '}') return i + 1 - pos;
  return 0;
}

struct MatchDataDeleter {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* context) const { pcre2_match_context_free(context); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* stack) const { pcre2_jit_stack_free(stack); }
};

}  // namespace

absl::StatusOr<std::string> OnigurumaToPcre2(absl::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() * 2);
  bool in_class = false;
  bool class_start = false;  // just after `[` or `[^`
  size_t i = 0;
  while (i < pattern.size()) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 == pattern.size()) return Unsupported("\\", i, "the pattern ends with a lone backslash");
      const char e = pattern[i + 1];
      class_start = false;
      switch (e) {
        case 's':
          absl::StrAppend(&out, in_class ? "" : "[", kWhiteSpaceRanges, in_class ? "" : "]");
          i += 2;
          continue;
        case 'S':
          if (in_class) return Unsupported("\\S", i, "a negated class inside a character class");
          absl::StrAppend(&out, "[^", kWhiteSpaceRanges, "]");
          i += 2;
          continue;
        case 'v':  // Oniguruma: the vertical tab; PCRE2: any vertical white space
          out += "\\x{0b}";
          i += 2;
          continue;
        case 'u': {  // Oniguruma (Ruby syntax): \uHHHH
          if (i + 6 > pattern.size() || !absl::ascii_isxdigit(pattern[i + 2]) ||
              !absl::ascii_isxdigit(pattern[i + 3]) || !absl::ascii_isxdigit(pattern[i + 4]) ||
              !absl::ascii_isxdigit(pattern[i + 5])) {
            return Unsupported(pattern.substr(i, 2), i, "expected four hexadecimal digits after \\u");
          }
          absl::StrAppend(&out, "\\x{", pattern.substr(i + 2, 4), "}");
          i += 6;
          continue;
        }
        case 'd':
        case 'D':
        case 'p':
        case 'P':
        case 'n':
        case 'r':
        case 't':
        case 'f':
        case 'e':
        case 'a':
        case 'x':
          break;
        case 'A':
        case 'z':
          if (in_class) return Unsupported(pattern.substr(i, 2), i, "an anchor inside a character class");
          break;
        default:
          if (absl::ascii_isalnum(e)) {
            return Unsupported(pattern.substr(i, 2), i, "its meaning differs between Oniguruma and PCRE2");
          }
          break;  // escaped punctuation or a non-ASCII character: a literal in both
      }
      out.append(pattern.data() + i, 2);
      i += 2;
      continue;
    }
    if (in_class) {
      if (c == '[') return Unsupported("[", i, "nested classes and POSIX brackets");
      if (c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&') {
        return Unsupported("&&", i, "class intersection");
      }
      if (c == ']') {
        if (class_start) return Unsupported("]", i, "a `]` first in a class");
        in_class = false;
      }
      class_start = false;
      out.push_back(c);
      ++i;
      continue;
    }
    switch (c) {
      case '[':
        in_class = true;
        class_start = true;
        out.push_back(c);
        ++i;
        if (i < pattern.size() && pattern[i] == '^') {
          out.push_back('^');
          ++i;
        }
        continue;
      case '^':
      case '$':
        return Unsupported(std::string(1, c), i, "a line anchor in Oniguruma, not in PCRE2");
      case '.':
        out += "[^\\n]";
        ++i;
        continue;
      case '{': {
        if (i + 1 < pattern.size() && pattern[i + 1] == ',') return Unsupported("{,", i, "an interval without minimum");
        const size_t length = IntervalLength(pattern, i);
        if (length > 0 && i + length < pattern.size() && pattern[i + length] == '+') {
          return Unsupported(pattern.substr(i, length + 1), i, "a possessive interval in PCRE2, not in Oniguruma");
        }
        break;
      }
      case '(': {
        if (i + 1 >= pattern.size() || pattern[i + 1] != '?') break;
        const absl::string_view rest = pattern.substr(i + 2);
        if (!rest.empty() && (rest[0] == ':' || rest[0] == '=' || rest[0] == '!' || rest[0] == '>')) break;
        if (rest.size() >= 2 && rest[0] == '<' && (rest[1] == '=' || rest[1] == '!')) break;
        if (rest.size() >= 2 && rest[0] == '<' && (absl::ascii_isalpha(rest[1]) || rest[1] == '_')) break;
        size_t j = 0;
        while (j < rest.size() && (rest[j] == 'i' || rest[j] == '-')) ++j;
        if (j > 0 && j < rest.size() && (rest[j] == ')' || rest[j] == ':')) break;
        return Unsupported(pattern.substr(i, std::min<size_t>(4, pattern.size() - i)), i,
                           "only the groups (?: (?= (?! (?<= (?<! (?> (?<name> and the option i are");
      }
      default:
        break;
    }
    out.push_back(c);
    ++i;
  }
  if (in_class) return Unsupported("[", pattern.size(), "a character class is not closed");
  return out;
}

std::string QuotePcre2(absl::string_view literal) {
  std::string out;
  out.reserve(literal.size() * 2);
  for (const char c : literal) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !absl::ascii_isalnum(c) && c != '_' && u >= 0x20 && u != 0x7F) {
      out.push_back('\\');  // every ASCII punctuation and space may be escaped in PCRE2
      out.push_back(c);
    } else if (u < 0x20 || u == 0x7F) {
      absl::StrAppend(&out, "\\x{", absl::Hex(u), "}");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<RegexSplitter>> RegexSplitter::Create(const std::string& pcre2_pattern,
                                                                     absl::string_view description) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pcre2_pattern.data()), pcre2_pattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | PCRE2_NEVER_BACKSLASH_C,
                                   &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(description, " does not compile (as PCRE2 ",
                                                   QuoteForMessage(pcre2_pattern, 200), ", at offset ", error_offset,
                                                   "): ", Pcre2ErrorMessage(error_code)));
  }
  std::unique_ptr<RegexSplitter> splitter(new RegexSplitter(code));
  uint32_t min_length = 0;
  if (pcre2_pattern_info(code, PCRE2_INFO_MINLENGTH, &min_length) != 0 || min_length == 0) {
    return absl::InvalidArgumentError(absl::StrCat(description, " can match the empty string, which is not supported"));
  }
  // Without JIT (unsupported platform) pcre2_match interprets the pattern: slower, same result.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return splitter;
}

RegexSplitter::~RegexSplitter() { pcre2_code_free(code_); }

absl::Status RegexSplitter::Split(absl::string_view text, absl::FunctionRef<void(absl::string_view)> on_piece) const {
  std::unique_ptr<pcre2_match_data, MatchDataDeleter> match_data(pcre2_match_data_create(1, nullptr));
  if (match_data == nullptr) return absl::ResourceExhaustedError("cannot allocate PCRE2 match data");
  // A larger JIT stack, made only when a match needs more than the default 32 KiB.
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> jit_stack;
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> context;
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;
  while (pos < text.size()) {
    int rc = pcre2_match(code_, subject, text.size(), pos, 0, match_data.get(), context.get());
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && context == nullptr) {
      jit_stack.reset(pcre2_jit_stack_create(256 << 10, 64 << 20, nullptr));
      context.reset(pcre2_match_context_create(nullptr));
      if (jit_stack == nullptr || context == nullptr)
        return absl::ResourceExhaustedError("cannot allocate a JIT stack");
      pcre2_jit_stack_assign(context.get(), nullptr, jit_stack.get());
      rc = pcre2_match(code_, subject, text.size(), pos, 0, match_data.get(), context.get());
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
      on_piece(text.substr(pos));
      break;
    }
    if (rc < 0) {
      return absl::ResourceExhaustedError(
          absl::StrCat("pre-tokenisation failed at byte ", pos, " of ", text.size(), ": ", Pcre2ErrorMessage(rc)));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match_data.get());
    const size_t start = ovector[0];
    const size_t end = ovector[1];
    if (end <= start) return absl::InternalError(absl::StrCat("empty pre-tokenisation match at byte ", start));
    if (start > pos) on_piece(text.substr(pos, start - pos));
    on_piece(text.substr(start, end - start));
    pos = end;
  }
  return absl::OkStatus();
}

}  // namespace rlhf::tokenizer::internal
