// Python semantics of Jinja values (jinja.h): str(), repr(), JSON, comparisons and the string methods chat templates
// call. Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_JINJA_VALUE_H_
#define RLHF_COMMON_TOKENIZER_JINJA_VALUE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tokenizer/jinja.h"

namespace rlhf::tokenizer::jinja {

bool IsAscii(absl::string_view s);

// The characters of `s`: each well-formed UTF-8 character, or each maximal ill-formed subsequence, is one unit.
std::vector<absl::string_view> Characters(absl::string_view s);
size_t CharacterCount(absl::string_view s);

// InvalidArgument naming `operation` when `s` has a non-ASCII cased letter (whose full case mapping Python would
// apply); the ASCII case functions below are exact for every other text.
absl::Status CheckAsciiCase(absl::string_view s, absl::string_view operation);
std::string AsciiUpper(absl::string_view s);
std::string AsciiLower(absl::string_view s);
std::string PythonTitle(absl::string_view s);       // str.title()
std::string PythonCapitalize(absl::string_view s);  // str.capitalize()

// str.strip / lstrip / rstrip: `chars` nullopt strips Python white space.
std::string PythonStrip(absl::string_view s, const std::optional<std::string>& chars, bool left, bool right);
// str.split(sep, maxsplit) (max_split < 0: no limit). InvalidArgument for an empty separator.
absl::StatusOr<std::vector<std::string>> PythonSplit(absl::string_view s, const std::optional<std::string>& sep,
                                                     int64_t max_split);
// str.replace(old, new, count) (count < 0: all).
std::string PythonReplace(absl::string_view s, absl::string_view old, absl::string_view replacement, int64_t count);
// str.splitlines().
std::vector<std::string> PythonSplitLines(absl::string_view s);

// repr() of a float and of a string, as Python prints them.
std::string FloatRepr(double v);
std::string StringRepr(absl::string_view s);

// Work allowed to the recursive operations below: each value visited and each 64 bytes of string compared count
// one unit; an operation that runs out fails with InvalidArgument instead of going on.
struct Budget {
  int64_t remaining;
};

// str(value) (undefined: ""), and repr(value). InvalidArgument for values Python would print as an object address
// (functions, one-pass sequences), and when the text would exceed `max_bytes`.
absl::StatusOr<std::string> ToStr(const Value& value, size_t max_bytes);
absl::StatusOr<std::string> Repr(const Value& value, size_t max_bytes);

// json.dumps(value, ensure_ascii, indent, sort_keys) with Python's default separators.
struct JsonOptions {
  int indent = -1;  // < 0: on one line
  bool ensure_ascii = false;
  bool sort_keys = false;
  // json.dumps' separators; nullopt: Python's defaults (", " or "," with an indent, and ": ").
  std::optional<std::string> item_separator;
  std::optional<std::string> key_separator;
};
// InvalidArgument when `out` would exceed `max_bytes`.
absl::Status AppendJson(const Value& value, const JsonOptions& options, int level, size_t max_bytes, std::string* out);

// Numbers (bool counts as int) as Python converts them; nullopt for other values.
std::optional<double> AsDouble(const Value& v);
std::optional<int64_t> AsInt(const Value& v);

// Python's ==, and <=> for the types Python orders (numbers, strings, lists, tuples); InvalidArgument otherwise.
absl::StatusOr<bool> Equal(const Value& a, const Value& b, Budget* budget);
absl::StatusOr<int> Compare(const Value& a, const Value& b, Budget* budget);

}  // namespace rlhf::tokenizer::jinja

#endif  // RLHF_COMMON_TOKENIZER_JINJA_VALUE_H_
