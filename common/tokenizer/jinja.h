// A small Jinja interpreter for chat templates: the subset of Jinja2 that Hugging Face chat templates use, rendered
// as transformers' apply_chat_template renders them (Jinja2's ImmutableSandboxedEnvironment with trim_blocks,
// lstrip_blocks and loop controls, plus `raise_exception`, `tojson` and `strftime_now`). Internal to
// common/tokenizer; chat_template.h is the public face.
//
// Supported:
//   - tags {{ }}, {% %}, {# #} with whitespace control (`-` and `+` on either side, trim_blocks, lstrip_blocks, one
//     trailing newline of the source dropped, \r\n and \r read as \n);
//   - statements if / elif / else, for (tuple targets, `if` filter, else, loop.index, index0, revindex, revindex0,
//     first, last, length, previtem, nextitem, depth, depth0, cycle()), set (names, tuples, namespace attributes,
//     `{% set x %}...{% endset %}`), break, continue, generation (rendered as its body);
//   - literals (strings with Python escapes, integers, floats, true/false/none, lists, tuples, dicts), attribute and
//     item access, slicing, calls, filters, tests, `not and or`, comparisons (chained), `in`, `not in`, `+ - * / //
//     % **`, `~`, `x if c else y`;
//   - functions range, namespace, dict, raise_exception, strftime_now; string methods startswith, endswith, split,
//     strip, lstrip, rstrip, upper, lower, title, capitalize, replace, find, count, join; dict methods get, items,
//     keys, values;
//   - filters abs, capitalize, count, default/d, e/escape, first, float, indent, int, items, join, last, length, list,
//     lower, map, reject, rejectattr, replace, reverse, safe, select, selectattr, string, title, tojson, trim, upper;
//   - tests boolean, callable, defined, divisibleby, eq/equalto/==, even, false, float, ge/>=, gt/greaterthan/>, in,
//     integer, iterable, le/<=, lower, lt/lessthan/<, mapping, ne/!=, none, number, odd, sameas, sequence, string,
//     true, undefined, upper.
// Anything else (macros, includes, other tags, filters, tests, functions or methods) is refused when the template is
// parsed, with the line and the construct; what can only be known while rendering (a type error, a method of the
// wrong type, an unsupported argument) fails the render with its line.
//
// Values follow Python's rules: undefined variables render as "" and are falsy (attribute access on them fails),
// integers are 64-bit (overflow fails instead of growing), strings are indexed, sliced and measured in characters
// (a byte outside well-formed UTF-8 counts as one), upper/lower/title/capitalize fail on non-ASCII cased letters
// (whose full Unicode case mapping is not implemented) and leave other characters alone.
//
// Rendering is bounded (Limits): output and every string or list made are capped in size, nesting of values is
// capped, and every evaluation step counts against a budget, so no template text or input can make rendering crash,
// recurse without bound or run without end.
#ifndef RLHF_COMMON_TOKENIZER_JINJA_H_
#define RLHF_COMMON_TOKENIZER_JINJA_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace rlhf::tokenizer::jinja {

class Value;
struct ListData;
struct DictData;
struct NamespaceData;
struct FunctionData;

// The undefined value: what an unknown name or a missing key evaluates to. `name` says what was looked up.
struct Undefined {
  std::string name;
};
struct None {};

// A Jinja/Python value. Immutable except for namespaces (which `set ns.x = ...` changes); copies are cheap.
class Value {
 public:
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kDict, kNamespace, kFunction };

  Value() : data_(Undefined{}) {}
  static Value MakeUndefined(std::string name) { return Value(Undefined{std::move(name)}); }
  static Value MakeNone() { return Value(None{}); }
  static Value Bool(bool b) { return Value(b); }
  static Value Int(int64_t i) { return Value(i); }
  static Value Float(double f) { return Value(f); }
  static Value String(std::string s) { return Value(std::make_shared<const std::string>(std::move(s))); }
  // Lists, tuples and the one-pass sequences of filters (map, select...) and dict views, which print differently
  // in Python (and are refused when printed).
  enum class ListKind { kList, kTuple, kView };
  static Value List(std::vector<Value> items, ListKind kind = ListKind::kList);
  // A dict with string keys, in insertion order (a repeated key keeps its first place and its last value).
  static Value Dict(std::vector<std::pair<std::string, Value>> items);
  static Value Namespace();
  static Value Function(std::string name, std::optional<Value> self = std::nullopt);

  Kind kind() const { return static_cast<Kind>(data_.index()); }
  bool is_undefined() const { return kind() == Kind::kUndefined; }
  bool is_none() const { return kind() == Kind::kNone; }
  bool is_string() const { return kind() == Kind::kString; }
  bool is_int() const { return kind() == Kind::kInt; }
  bool is_list() const { return kind() == Kind::kList; }
  bool is_dict() const { return kind() == Kind::kDict; }

  bool bool_value() const { return std::get<bool>(data_); }
  int64_t int_value() const { return std::get<int64_t>(data_); }
  double float_value() const { return std::get<double>(data_); }
  const std::string& string_value() const { return *std::get<std::shared_ptr<const std::string>>(data_); }
  const ListData& list() const { return *std::get<std::shared_ptr<const ListData>>(data_); }
  const DictData& dict() const { return *std::get<std::shared_ptr<const DictData>>(data_); }
  NamespaceData& ns() const { return *std::get<std::shared_ptr<NamespaceData>>(data_); }
  const FunctionData& function() const { return *std::get<std::shared_ptr<const FunctionData>>(data_); }
  const std::string& undefined_name() const { return std::get<Undefined>(data_).name; }

  // How deeply lists and dicts nest in this value (0 for a scalar).
  int depth() const;

  // Whether this value is or holds (at any depth of lists and dicts) a namespace.
  bool HoldsNamespace() const;

  // Python's truth value (undefined and none are false).
  bool Truthy() const;

  // Python's type name, for messages ("str", "int", "list", "undefined" ...).
  std::string TypeName() const;

  // Whether two values refer to the same object (Jinja's `sameas`).
  bool SameAs(const Value& other) const;

 private:
  using Data = std::variant<Undefined, None, bool, int64_t, double, std::shared_ptr<const std::string>,
                            std::shared_ptr<const ListData>, std::shared_ptr<const DictData>,
                            std::shared_ptr<NamespaceData>, std::shared_ptr<const FunctionData>>;
  template <typename T>
  explicit Value(T data) : data_(std::move(data)) {}

  Data data_;
};

struct ListData {
  std::vector<Value> items;
  Value::ListKind kind = Value::ListKind::kList;
  int depth = 1;
  bool holds_namespace = false;
};

struct DictData {
  std::vector<std::pair<std::string, Value>> items;
  absl::flat_hash_map<std::string, size_t> index;  // key -> position in items; only for dicts of many items
  int depth = 1;
  bool holds_namespace = false;

  // Dicts made with up to this many items are searched in order instead of through `index`.
  static constexpr size_t kLinearSearchMax = 16;

  const Value* Find(absl::string_view key) const {
    if (index.empty()) {
      for (const auto& [k, v] : items) {
        if (k == key) return &v;
      }
      return nullptr;
    }
    const auto it = index.find(key);
    return it == index.end() ? nullptr : &items[it->second].second;
  }
};

struct NamespaceData {
  std::vector<std::pair<std::string, Value>> attrs;  // in order of first assignment
};

// A built-in function, or a method bound to `self`.
struct FunctionData {
  std::string name;
  std::optional<Value> self;
};

// Bounds on one render.
struct Limits {
  // Bytes of output, and of any one string made while rendering.
  size_t max_output_bytes = size_t{16} << 20;
  // Elements of any one list, dict or range.
  size_t max_collection_size = size_t{1} << 20;
  // Evaluation steps (one per expression and statement evaluated, plus one per 64 bytes or 8 elements walked or
  // copied).
  int64_t max_steps = 5'000'000;
  // Nesting of lists and dicts in a value.
  int max_value_depth = 64;
  // Bytes of strings (and 16 to 64 bytes per list or dict item) made in one render, all told.
  size_t max_allocated_bytes = size_t{256} << 20;
};

struct Ast;  // jinja_ast.h

// A parsed template. Immutable; Render may be called from many threads at once.
class Template {
 public:
  // Parses `source`. InvalidArgument "line N: ..." naming the construct for a syntax error or anything
  // unsupported. Nesting of blocks and expressions deeper than 128 is refused.
  static absl::StatusOr<std::unique_ptr<Template>> Parse(absl::string_view source);
  ~Template();
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;

  // Renders with the given global variables. InvalidArgument "line N: ..." on a render error; a template's
  // raise_exception(message) gives InvalidArgument "line N: the template raised an error: <message>".
  // `now_unix_seconds` is the time strftime_now formats (nullopt: the current time), in local time.
  absl::StatusOr<std::string> Render(const std::vector<std::pair<std::string, Value>>& variables,
                                     const Limits& limits = {},
                                     std::optional<int64_t> now_unix_seconds = std::nullopt) const;

 private:
  explicit Template(std::unique_ptr<Ast> ast);
  std::unique_ptr<Ast> ast_;
};

}  // namespace rlhf::tokenizer::jinja

#endif  // RLHF_COMMON_TOKENIZER_JINJA_H_
