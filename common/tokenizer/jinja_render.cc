// Rendering of parsed Jinja templates (jinja.h): scopes, statements, expressions and the built-in functions,
// methods, filters and tests, with Python's semantics.
#include <time.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "common/tokenizer/jinja.h"
#include "common/tokenizer/jinja_ast.h"
#include "common/tokenizer/jinja_builtins.h"
#include "common/tokenizer/jinja_value.h"
#include "common/tokenizer/utf8.h"
#include "common/util/status_macros.h"

namespace rlhf::tokenizer::jinja {
namespace {

// Python's str methods, and those that are supported.
const absl::flat_hash_set<std::string>& StrMethods() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{
      "capitalize", "casefold",     "center",       "count",   "encode",     "endswith",    "expandtabs",
      "find",       "format",       "format_map",   "index",   "isalnum",    "isalpha",     "isascii",
      "isdecimal",  "isdigit",      "isidentifier", "islower", "isnumeric",  "isprintable", "isspace",
      "istitle",    "isupper",      "join",         "ljust",   "lower",      "lstrip",      "maketrans",
      "partition",  "removeprefix", "removesuffix", "replace", "rfind",      "rindex",      "rjust",
      "rpartition", "rsplit",       "rstrip",       "split",   "splitlines", "startswith",  "strip",
      "swapcase",   "title",        "translate",    "upper",   "zfill"};
  return *kNames;
}
const absl::flat_hash_set<std::string>& SupportedStrMethods() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{
      "startswith", "endswith", "split",      "strip",   "lstrip", "rstrip", "upper",
      "lower",      "title",    "capitalize", "replace", "find",   "count",  "join"};
  return *kNames;
}
// dict methods that do not change the dict (the sandbox hides the others) and those supported.
const absl::flat_hash_set<std::string>& DictMethods() {
  static const auto* const kNames =
      new absl::flat_hash_set<std::string>{"copy", "fromkeys", "get", "items", "keys", "values"};
  return *kNames;
}
const absl::flat_hash_set<std::string>& SupportedDictMethods() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{"get", "items", "keys", "values"};
  return *kNames;
}
const absl::flat_hash_set<std::string>& ListMethods() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{"copy", "count", "index"};
  return *kNames;
}
const absl::flat_hash_set<std::string>& MutatingMethods() {  // the sandbox makes these undefined
  static const auto* const kNames = new absl::flat_hash_set<std::string>{
      "append", "clear", "extend", "insert", "pop", "popitem", "remove", "reverse", "setdefault", "sort", "update"};
  return *kNames;
}

const absl::flat_hash_set<std::string>& FilterNames() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{
      "abs",     "capitalize", "count", "d",      "default",    "e",      "escape", "first",  "float",  "indent",
      "int",     "items",      "join",  "last",   "length",     "list",   "lower",  "map",    "reject", "rejectattr",
      "replace", "reverse",    "safe",  "select", "selectattr", "string", "title",  "tojson", "trim",   "upper"};
  return *kNames;
}

const absl::flat_hash_set<std::string>& TestNames() {
  static const auto* const kNames = new absl::flat_hash_set<std::string>{
      "boolean", "callable", "defined", "divisibleby", "eq",          "equalto", "==",      "even",      "false",
      "float",   "ge",       ">=",      "gt",          "greaterthan", ">",       "in",      "integer",   "iterable",
      "le",      "<=",       "lower",   "lt",          "lessthan",    "<",       "mapping", "ne",        "!=",
      "none",    "number",   "odd",     "sameas",      "sequence",    "string",  "true",    "undefined", "upper"};
  return *kNames;
}

const absl::flat_hash_set<std::string>& GlobalFunctions() {
  static const auto* const kNames =
      new absl::flat_hash_set<std::string>{"range", "namespace", "dict", "raise_exception", "strftime_now"};
  return *kNames;
}

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

// Call arguments, evaluated.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;

  // The argument at `index` or named `name`; nullopt when absent.
  std::optional<Value> Get(size_t index, absl::string_view name) const {
    if (index < positional.size()) return positional[index];
    for (const auto& [key, value] : keyword) {
      if (key == name) return value;
    }
    return std::nullopt;
  }
  // Refuses arguments beyond `max_positional` and keywords outside `names`.
  absl::Status Check(absl::string_view what, size_t max_positional, std::vector<absl::string_view> names) const {
    if (positional.size() > max_positional) {
      return Invalid(
          absl::StrCat(what, " takes at most ", max_positional, " positional arguments, got ", positional.size()));
    }
    for (const auto& [key, value] : keyword) {
      if (std::find(names.begin(), names.end(), key) == names.end()) {
        return Invalid(absl::StrCat(what, " does not support the argument '", key, "'"));
      }
    }
    return absl::OkStatus();
  }
};

absl::StatusOr<std::string> StringArg(const std::optional<Value>& v, absl::string_view what) {
  if (!v.has_value() || !v->is_string()) {
    return Invalid(absl::StrCat(what, " must be a string, got ", v.has_value() ? v->TypeName() : "nothing"));
  }
  return v->string_value();
}

absl::StatusOr<int64_t> IntArg(const std::optional<Value>& v, absl::string_view what) {
  const std::optional<int64_t> i = v.has_value() ? AsInt(*v) : std::nullopt;
  if (!i.has_value())
    return Invalid(absl::StrCat(what, " must be an integer, got ", v.has_value() ? v->TypeName() : "nothing"));
  return *i;
}

class Renderer {
 public:
  Renderer(const Limits& limits, const std::vector<std::pair<std::string, Value>>& variables,
           std::optional<int64_t> now)
      : limits_(limits), now_(now), budget_{limits.max_steps} {
    for (const auto& [name, value] : variables) context_[name] = value;
    frames_.emplace_back();
  }

  absl::StatusOr<std::string> Run(const Ast& ast) {
    std::string out;
    out_ = &out;
    ASSIGN_OR_RETURN(const Flow flow, Exec(ast.body));
    (void)flow;
    return out;
  }

 private:
  enum class Flow { kNormal, kBreak, kContinue };
  // The variables a scope sets (few: searched in order).
  using Frame = std::vector<std::pair<std::string, Value>>;

  static void SetIn(Frame& frame, const std::string& name, Value value) {
    for (auto& [key, existing] : frame) {
      if (key == name) {
        existing = std::move(value);
        return;
      }
    }
    frame.emplace_back(name, std::move(value));
  }

  static absl::Status AtLine(const absl::Status& status, int line) {
    if (status.ok() || absl::StartsWith(status.message(), "line ")) return status;
    return absl::Status(status.code(), absl::StrCat("line ", line, ": ", status.message()));
  }

  absl::Status Step(int64_t n = 1) {
    budget_.remaining -= n;
    if (budget_.remaining < 0) {
      return Invalid(absl::StrCat("rendering took more than ", limits_.max_steps, " steps (the limit)"));
    }
    return absl::OkStatus();
  }

  // Work proportional to the size of a string about to be walked.
  absl::Status Scan(absl::string_view s) { return Step(static_cast<int64_t>(s.size() / 64)); }
  absl::Status Scan(const Value& v) {
    if (v.is_string()) return Scan(v.string_value());
    if (v.is_list()) return Step(static_cast<int64_t>(v.list().items.size() / 8));
    if (v.is_dict()) return Step(static_cast<int64_t>(v.dict().items.size() / 8));
    return absl::OkStatus();
  }

  // Counts memory made while rendering against Limits::max_allocated_bytes.
  absl::Status Allocate(size_t bytes) {
    allocated_ += bytes;
    if (allocated_ > limits_.max_allocated_bytes) {
      return Invalid(
          absl::StrCat("rendering made more than ", limits_.max_allocated_bytes, " bytes of values (the limit)"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckString(size_t size) {
    RETURN_IF_ERROR(Step(static_cast<int64_t>(size / 64)));
    if (size > limits_.max_output_bytes) {
      return Invalid(absl::StrCat("a string of ", size, " bytes exceeds the limit of ", limits_.max_output_bytes));
    }
    return Allocate(size);
  }

  // A size check before building a string (MakeString then counts it).
  absl::Status CheckLength(size_t size) const {
    if (size > limits_.max_output_bytes) {
      return Invalid(absl::StrCat("a string of ", size, " bytes exceeds the limit of ", limits_.max_output_bytes));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Str(const Value& value) {
    ASSIGN_OR_RETURN(std::string text, ToStr(value, limits_.max_output_bytes));
    RETURN_IF_ERROR(CheckString(text.size()));
    return text;
  }
  absl::StatusOr<Value> MakeString(std::string s) {
    RETURN_IF_ERROR(CheckString(s.size()));
    return Value::String(std::move(s));
  }
  absl::StatusOr<Value> MakeList(std::vector<Value> items, Value::ListKind kind = Value::ListKind::kList) {
    RETURN_IF_ERROR(Step(static_cast<int64_t>(items.size() / 8)));
    RETURN_IF_ERROR(Allocate(items.size() * sizeof(Value)));
    if (items.size() > limits_.max_collection_size) {
      return Invalid(
          absl::StrCat("a list of ", items.size(), " items exceeds the limit of ", limits_.max_collection_size));
    }
    Value list = Value::List(std::move(items), kind);
    if (list.depth() > limits_.max_value_depth) {
      return Invalid(absl::StrCat("values nested deeper than ", limits_.max_value_depth, " are not supported"));
    }
    return list;
  }
  absl::StatusOr<Value> MakeDict(std::vector<std::pair<std::string, Value>> items) {
    RETURN_IF_ERROR(Step(static_cast<int64_t>(items.size() / 8)));
    RETURN_IF_ERROR(Allocate(items.size() * 64));
    if (items.size() > limits_.max_collection_size) {
      return Invalid(
          absl::StrCat("a dict of ", items.size(), " items exceeds the limit of ", limits_.max_collection_size));
    }
    Value dict = Value::Dict(std::move(items));
    if (dict.depth() > limits_.max_value_depth) {
      return Invalid(absl::StrCat("values nested deeper than ", limits_.max_value_depth, " are not supported"));
    }
    return dict;
  }

  absl::Status Write(absl::string_view text) {
    if (out_->size() + text.size() > limits_.max_output_bytes) {
      return Invalid(absl::StrCat("the output exceeds the limit of ", limits_.max_output_bytes, " bytes"));
    }
    RETURN_IF_ERROR(Step(static_cast<int64_t>(text.size() / 64)));
    out_->append(text.data(), text.size());
    return absl::OkStatus();
  }

  // ---- Names ----

  Value Lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      for (const auto& [key, value] : *it) {
        if (key == name) return value;
      }
    }
    const auto found = context_.find(name);
    if (found != context_.end()) return found->second;
    if (GlobalFunctions().contains(name)) return Value::Function(name);
    return Value::MakeUndefined(name);
  }

  // ---- Statements ----

  absl::StatusOr<Flow> Exec(const std::vector<Stmt>& body) {
    for (const Stmt& stmt : body) {
      absl::StatusOr<Flow> flow = ExecOne(stmt);
      if (!flow.ok()) return AtLine(flow.status(), stmt.line);
      if (*flow != Flow::kNormal) return *flow;
    }
    return Flow::kNormal;
  }

  absl::StatusOr<Flow> ExecOne(const Stmt& stmt) {
    RETURN_IF_ERROR(Step());
    switch (stmt.kind) {
      case StmtKind::kText:
        RETURN_IF_ERROR(Write(stmt.text));
        return Flow::kNormal;
      case StmtKind::kOutput: {
        ASSIGN_OR_RETURN(const Value value, Eval(*stmt.expr));
        ASSIGN_OR_RETURN(const std::string text, Str(value));
        RETURN_IF_ERROR(Write(text));
        return Flow::kNormal;
      }
      case StmtKind::kIf:
        for (const Branch& branch : stmt.branches) {
          bool take = branch.condition == nullptr;
          if (!take) {
            ASSIGN_OR_RETURN(const Value condition, Eval(*branch.condition));
            take = condition.Truthy();
          }
          if (take) return Exec(branch.body);
        }
        return Flow::kNormal;
      case StmtKind::kFor:
        return ExecFor(stmt);
      case StmtKind::kSet: {
        ASSIGN_OR_RETURN(const Value value, Eval(*stmt.expr));
        RETURN_IF_ERROR(Assign(stmt, value));
        return Flow::kNormal;
      }
      case StmtKind::kSetBlock: {
        std::string captured;
        std::string* saved = out_;
        out_ = &captured;
        absl::StatusOr<Flow> flow = Exec(stmt.body);
        out_ = saved;
        if (!flow.ok()) return flow.status();
        ASSIGN_OR_RETURN(Value text, MakeString(std::move(captured)));
        SetIn(frames_.back(), stmt.targets[0], std::move(text));
        return *flow;
      }
      case StmtKind::kBreak:
        return Flow::kBreak;
      case StmtKind::kContinue:
        return Flow::kContinue;
      case StmtKind::kBlock:
        return Exec(stmt.body);
    }
    return Flow::kNormal;
  }

  absl::Status BindTargets(const std::vector<std::string>& targets, const Value& value, Frame* frame) {
    if (targets.size() == 1) {
      SetIn(*frame, targets[0], value);
      return absl::OkStatus();
    }
    ASSIGN_OR_RETURN(const std::vector<Value> items, Iterate(value));
    if (items.size() != targets.size()) {
      return Invalid(absl::StrCat("cannot unpack ", items.size(), " values into ", targets.size(), " names"));
    }
    for (size_t i = 0; i < targets.size(); ++i) SetIn(*frame, targets[i], items[i]);
    return absl::OkStatus();
  }

  absl::Status Assign(const Stmt& stmt, const Value& value) {
    if (!stmt.attr.empty()) {
      // No namespace may reach itself (printing it would never end).
      if (value.HoldsNamespace()) {
        return Invalid(
            absl::StrCat("storing a namespace inside the namespace '", stmt.targets[0], "' is not supported"));
      }
      const Value target = Lookup(stmt.targets[0]);
      if (target.kind() != Value::Kind::kNamespace) {
        return Invalid(absl::StrCat("cannot assign the attribute '", stmt.attr, "' of '", stmt.targets[0], "', a ",
                                    target.TypeName(), " (only namespace() objects take attributes)"));
      }
      for (auto& [name, existing] : target.ns().attrs) {
        if (name == stmt.attr) {
          existing = value;
          return absl::OkStatus();
        }
      }
      if (target.ns().attrs.size() >= limits_.max_collection_size) return Invalid("too many namespace attributes");
      target.ns().attrs.emplace_back(stmt.attr, value);
      return absl::OkStatus();
    }
    return BindTargets(stmt.targets, value, &frames_.back());
  }

  absl::StatusOr<Flow> ExecFor(const Stmt& stmt) {
    ASSIGN_OR_RETURN(const Value iterable, Eval(*stmt.expr));
    ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(iterable));
    if (stmt.filter != nullptr) {
      std::vector<Value> kept;
      for (const Value& item : items) {
        frames_.emplace_back();
        absl::Status bound = BindTargets(stmt.targets, item, &frames_.back());
        absl::StatusOr<Value> keep = bound.ok() ? Eval(*stmt.filter) : absl::StatusOr<Value>(bound);
        frames_.pop_back();
        if (!keep.ok()) return keep.status();
        if (keep->Truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      frames_.emplace_back();
      absl::StatusOr<Flow> flow = Exec(stmt.else_body);
      frames_.pop_back();
      if (!flow.ok()) return flow.status();
      return Flow::kNormal;
    }
    const int64_t n = static_cast<int64_t>(items.size());
    for (int64_t i = 0; i < n; ++i) {
      RETURN_IF_ERROR(Step());
      std::vector<std::pair<std::string, Value>> loop = {
          {"index", Value::Int(i + 1)},
          {"index0", Value::Int(i)},
          {"revindex", Value::Int(n - i)},
          {"revindex0", Value::Int(n - i - 1)},
          {"first", Value::Bool(i == 0)},
          {"last", Value::Bool(i == n - 1)},
          {"length", Value::Int(n)},
          {"depth", Value::Int(1)},
          {"depth0", Value::Int(0)},
          {"previtem", i > 0 ? items[i - 1] : Value::MakeUndefined("loop.previtem")},
          {"nextitem", i + 1 < n ? items[i + 1] : Value::MakeUndefined("loop.nextitem")},
          {"cycle", Value::Function("cycle", Value::Int(i))}};
      frames_.emplace_back();
      SetIn(frames_.back(), "loop", Value::Dict(std::move(loop)));
      absl::Status bound = BindTargets(stmt.targets, items[i], &frames_.back());
      absl::StatusOr<Flow> flow = bound.ok() ? Exec(stmt.body) : absl::StatusOr<Flow>(bound);
      frames_.pop_back();
      if (!flow.ok()) return flow.status();
      if (*flow == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  // The items a for loop (or list()) goes through: list items, dict keys, string characters; none for undefined.
  absl::StatusOr<std::vector<Value>> Iterate(const Value& value) {
    switch (value.kind()) {
      case Value::Kind::kUndefined:
        return std::vector<Value>{};
      case Value::Kind::kList:
        RETURN_IF_ERROR(Scan(value));
        return value.list().items;
      case Value::Kind::kDict: {
        RETURN_IF_ERROR(Scan(value));
        std::vector<Value> keys;
        for (const auto& [key, item] : value.dict().items) keys.push_back(Value::String(key));
        return keys;
      }
      case Value::Kind::kString: {
        // One value a character: charged in full before they are made.
        RETURN_IF_ERROR(Step(static_cast<int64_t>(value.string_value().size())));
        RETURN_IF_ERROR(Allocate(value.string_value().size() * 48));
        std::vector<Value> chars;
        for (const absl::string_view c : Characters(value.string_value()))
          chars.push_back(Value::String(std::string(c)));
        return chars;
      }
      default:
        return Invalid(absl::StrCat("'", value.TypeName(), "' object is not iterable"));
    }
  }

  // ---- Expressions ----

  absl::StatusOr<Value> Eval(const Expr& e) {
    absl::StatusOr<Value> value = EvalImpl(e);
    if (!value.ok()) return AtLine(value.status(), e.line);
    return value;
  }

  absl::StatusOr<Value> EvalImpl(const Expr& e) {
    RETURN_IF_ERROR(Step());
    switch (e.kind) {
      case ExprKind::kConst:
        return e.value;
      case ExprKind::kName:
        return Lookup(e.name);
      case ExprKind::kGetAttr: {
        ASSIGN_OR_RETURN(const Value object, Eval(*e.args[0]));
        return GetAttr(object, e.name);
      }
      case ExprKind::kGetItem: {
        ASSIGN_OR_RETURN(const Value object, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(const Value index, Eval(*e.args[1]));
        return GetItem(object, index);
      }
      case ExprKind::kSlice:
        return EvalSlice(e);
      case ExprKind::kCall: {
        ASSIGN_OR_RETURN(const Value callee, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(const Args args, EvalArgs(e, 1));
        return Call(callee, args);
      }
      case ExprKind::kFilter: {
        ASSIGN_OR_RETURN(const Value value, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(const Args args, EvalArgs(e, 1));
        return ApplyFilter(e.name, value, args);
      }
      case ExprKind::kTest: {
        ASSIGN_OR_RETURN(const Value value, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(const Args args, EvalArgs(e, 1));
        ASSIGN_OR_RETURN(const bool result, ApplyTest(e.name, value, args));
        return Value::Bool(result != e.negated);
      }
      case ExprKind::kNot: {
        ASSIGN_OR_RETURN(const Value value, Eval(*e.args[0]));
        return Value::Bool(!value.Truthy());
      }
      case ExprKind::kNeg:
      case ExprKind::kPos: {
        ASSIGN_OR_RETURN(const Value value, Eval(*e.args[0]));
        if (value.is_undefined()) return UndefinedError(value);
        if (e.kind == ExprKind::kPos) {
          if (!AsDouble(value).has_value())
            return Invalid(absl::StrCat("bad operand type for unary +: '", value.TypeName(), "'"));
          return value.kind() == Value::Kind::kBool ? Value::Int(*AsInt(value)) : value;
        }
        if (const std::optional<int64_t> i = AsInt(value); i.has_value()) {
          if (*i == std::numeric_limits<int64_t>::min()) return Invalid("integer overflow");
          return Value::Int(-*i);
        }
        if (value.kind() == Value::Kind::kFloat) return Value::Float(-value.float_value());
        return Invalid(absl::StrCat("bad operand type for unary -: '", value.TypeName(), "'"));
      }
      case ExprKind::kAnd:
      case ExprKind::kOr: {
        ASSIGN_OR_RETURN(const Value left, Eval(*e.args[0]));
        if (left.Truthy() == (e.kind == ExprKind::kOr)) return left;
        return Eval(*e.args[1]);
      }
      case ExprKind::kBinary: {
        ASSIGN_OR_RETURN(const Value left, Eval(*e.args[0]));
        ASSIGN_OR_RETURN(const Value right, Eval(*e.args[1]));
        return BinaryOp(e.name, left, right);
      }
      case ExprKind::kCompare: {
        ASSIGN_OR_RETURN(Value left, Eval(*e.args[0]));
        for (size_t i = 0; i < e.ops.size(); ++i) {
          ASSIGN_OR_RETURN(Value right, Eval(*e.args[i + 1]));
          ASSIGN_OR_RETURN(const bool holds, CompareOp(e.ops[i], left, right));
          if (!holds) return Value::Bool(false);
          left = std::move(right);
        }
        return Value::Bool(true);
      }
      case ExprKind::kConcat: {
        std::string out;
        for (const ExprPtr& arg : e.args) {
          ASSIGN_OR_RETURN(const Value value, Eval(*arg));
          ASSIGN_OR_RETURN(const std::string text, Str(value));
          RETURN_IF_ERROR(CheckLength(out.size() + text.size()));
          out += text;
        }
        return MakeString(std::move(out));
      }
      case ExprKind::kCond: {
        ASSIGN_OR_RETURN(const Value test, Eval(*e.args[0]));
        if (test.Truthy()) return Eval(*e.args[1]);
        if (e.args[2] == nullptr) return Value::MakeUndefined("the else branch");
        return Eval(*e.args[2]);
      }
      case ExprKind::kList:
      case ExprKind::kTuple: {
        std::vector<Value> items;
        for (const ExprPtr& arg : e.args) {
          ASSIGN_OR_RETURN(Value item, Eval(*arg));
          items.push_back(std::move(item));
        }
        return MakeList(std::move(items),
                        e.kind == ExprKind::kTuple ? Value::ListKind::kTuple : Value::ListKind::kList);
      }
      case ExprKind::kDict: {
        std::vector<std::pair<std::string, Value>> items;
        for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
          ASSIGN_OR_RETURN(const Value key, Eval(*e.args[i]));
          if (!key.is_string()) return Invalid(absl::StrCat("dict keys must be strings, got ", key.TypeName()));
          ASSIGN_OR_RETURN(Value value, Eval(*e.args[i + 1]));
          items.emplace_back(key.string_value(), std::move(value));
        }
        return MakeDict(std::move(items));
      }
    }
    return Invalid("unknown expression");
  }

  absl::StatusOr<Args> EvalArgs(const Expr& e, size_t first) {
    Args args;
    for (size_t i = first; i < e.args.size(); ++i) {
      ASSIGN_OR_RETURN(Value value, Eval(*e.args[i]));
      args.positional.push_back(std::move(value));
    }
    for (const auto& [name, expr] : e.kwargs) {
      ASSIGN_OR_RETURN(Value value, Eval(*expr));
      args.keyword.emplace_back(name, std::move(value));
    }
    return args;
  }

  static absl::Status UndefinedError(const Value& value) {
    return Invalid(absl::StrCat("'", value.undefined_name(), "' is undefined"));
  }

  // obj.name, as Jinja2's sandboxed getattr: methods first, then items (dicts) or attributes (namespaces);
  // undefined when neither (an error only when obj is itself undefined).
  absl::StatusOr<Value> GetAttr(const Value& object, const std::string& name) {
    switch (object.kind()) {
      case Value::Kind::kUndefined:
        return UndefinedError(object);
      case Value::Kind::kString:
        if (StrMethods().contains(name)) return Value::Function(name, object);
        break;
      case Value::Kind::kDict:
        if (DictMethods().contains(name)) return Value::Function(name, object);
        if (MutatingMethods().contains(name)) break;
        if (const Value* value = object.dict().Find(name)) return *value;
        break;
      case Value::Kind::kList:
        if (object.list().kind != Value::ListKind::kView && ListMethods().contains(name)) {
          return Value::Function(name, object);
        }
        break;
      case Value::Kind::kNamespace:
        for (const auto& [key, value] : object.ns().attrs) {
          if (key == name) return value;
        }
        break;
      default:
        break;
    }
    return Value::MakeUndefined(name);
  }

  // obj[index], as Jinja2's getitem: the item, else (for a string index) the attribute, else undefined.
  absl::StatusOr<Value> GetItem(const Value& object, const Value& index) {
    if (object.is_undefined()) return UndefinedError(object);
    if (object.is_dict() && index.is_string()) {
      if (const Value* value = object.dict().Find(index.string_value())) return *value;
    }
    const std::optional<int64_t> i = AsInt(index);
    if (i.has_value() && object.is_list() && object.list().kind != Value::ListKind::kView) {
      const int64_t n = static_cast<int64_t>(object.list().items.size());
      const int64_t at = *i < 0 ? *i + n : *i;
      if (at >= 0 && at < n) return object.list().items[static_cast<size_t>(at)];
      return Value::MakeUndefined(absl::StrCat("index ", *i));
    }
    if (i.has_value() && object.is_string()) {
      const std::string& s = object.string_value();
      RETURN_IF_ERROR(Scan(s));
      const int64_t n = IsAscii(s) ? static_cast<int64_t>(s.size()) : static_cast<int64_t>(CharacterCount(s));
      const int64_t at = *i < 0 ? *i + n : *i;
      if (at < 0 || at >= n) return Value::MakeUndefined(absl::StrCat("index ", *i));
      size_t pos = 0;
      if (n == static_cast<int64_t>(s.size())) {
        pos = static_cast<size_t>(at);  // one byte a character
      } else {
        for (int64_t k = 0; k < at; ++k) pos += static_cast<size_t>(internal::NextUtf8Char(s, pos).length);
      }
      return Value::String(s.substr(pos, static_cast<size_t>(internal::NextUtf8Char(s, pos).length)));
    }
    if (index.is_string()) return GetAttr(object, index.string_value());
    return Value::MakeUndefined("item");
  }

  absl::StatusOr<Value> EvalSlice(const Expr& e) {
    ASSIGN_OR_RETURN(const Value object, Eval(*e.args[0]));
    std::optional<int64_t> bounds[3];
    for (int k = 0; k < 3; ++k) {
      if (e.args[k + 1] == nullptr) continue;
      ASSIGN_OR_RETURN(const Value bound, Eval(*e.args[k + 1]));
      if (bound.is_none()) continue;
      const std::optional<int64_t> b = AsInt(bound);
      if (!b.has_value())
        return Invalid(absl::StrCat("slice indices must be integers or none, got ", bound.TypeName()));
      bounds[k] = b;
    }
    if (object.is_undefined()) return UndefinedError(object);
    std::vector<absl::string_view> chars;
    const std::vector<Value>* items = nullptr;
    int64_t n = 0;
    RETURN_IF_ERROR(Scan(object));
    if (object.is_string()) {
      // A vector of characters costs more than a scan; charge it as such (ASCII text needs none).
      if (!IsAscii(object.string_value()))
        RETURN_IF_ERROR(Step(static_cast<int64_t>(object.string_value().size() / 4)));
      chars = Characters(object.string_value());
      n = static_cast<int64_t>(chars.size());
    } else if (object.is_list() && object.list().kind != Value::ListKind::kView) {
      items = &object.list().items;
      n = static_cast<int64_t>(items->size());
    } else {
      return Invalid(absl::StrCat("'", object.TypeName(), "' object is not subscriptable with a slice"));
    }
    const int64_t step = bounds[2].value_or(1);
    if (step == 0) return Invalid("slice step cannot be zero");
    // Python's slice.indices().
    const auto clamp = [&](std::optional<int64_t> v, int64_t fallback) {
      if (!v.has_value()) return fallback;
      int64_t x = *v;
      if (x < 0) x += n;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t start = clamp(bounds[0], step > 0 ? 0 : n - 1);
    const int64_t stop = clamp(bounds[1], step > 0 ? n : -1);
    std::vector<int64_t> picked;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) picked.push_back(i);
    RETURN_IF_ERROR(Step(static_cast<int64_t>(picked.size() / 8)));
    if (items == nullptr) {
      std::string out;
      for (const int64_t i : picked)
        out.append(chars[static_cast<size_t>(i)].data(), chars[static_cast<size_t>(i)].size());
      return MakeString(std::move(out));
    }
    std::vector<Value> out;
    for (const int64_t i : picked) out.push_back((*items)[static_cast<size_t>(i)]);
    return MakeList(std::move(out), object.list().kind);
  }

  absl::StatusOr<Value> BinaryOp(const std::string& op, const Value& left, const Value& right) {
    if (left.is_undefined()) return UndefinedError(left);
    if (right.is_undefined()) return UndefinedError(right);
    const std::optional<int64_t> li = AsInt(left), ri = AsInt(right);
    const std::optional<double> ld = AsDouble(left), rd = AsDouble(right);
    const auto type_error = [&]() {
      return Invalid(
          absl::StrCat("unsupported operand types for ", op, ": '", left.TypeName(), "' and '", right.TypeName(), "'"));
    };
    if (op == "+") {
      if (li && ri) {
        int64_t r;
        if (__builtin_add_overflow(*li, *ri, &r)) return Invalid("integer overflow");
        return Value::Int(r);
      }
      if (ld && rd) return Value::Float(*ld + *rd);
      if (left.is_string() && right.is_string()) return MakeString(left.string_value() + right.string_value());
      if (left.is_list() && right.is_list() && left.list().kind == right.list().kind &&
          left.list().kind != Value::ListKind::kView) {
        std::vector<Value> items = left.list().items;
        items.insert(items.end(), right.list().items.begin(), right.list().items.end());
        return MakeList(std::move(items), left.list().kind);
      }
      return type_error();
    }
    if (op == "-") {
      if (li && ri) {
        int64_t r;
        if (__builtin_sub_overflow(*li, *ri, &r)) return Invalid("integer overflow");
        return Value::Int(r);
      }
      if (ld && rd) return Value::Float(*ld - *rd);
      return type_error();
    }
    if (op == "*") {
      if (li && ri) {
        int64_t r;
        if (__builtin_mul_overflow(*li, *ri, &r)) return Invalid("integer overflow");
        return Value::Int(r);
      }
      if (ld && rd) return Value::Float(*ld * *rd);
      const Value* sequence = ri ? &left : li ? &right : nullptr;
      const int64_t times = ri ? *ri : li ? *li : 0;
      if (sequence != nullptr && sequence->is_string()) {
        const std::string& s = sequence->string_value();
        if (times <= 0 || s.empty()) return Value::String("");
        if (static_cast<uint64_t>(times) > limits_.max_output_bytes / s.size()) {
          return Invalid(absl::StrCat("repeating a string ", times, " times exceeds the limit of ",
                                      limits_.max_output_bytes, " bytes"));
        }
        std::string out;
        out.reserve(s.size() * static_cast<size_t>(times));
        for (int64_t i = 0; i < times; ++i) out += s;
        return MakeString(std::move(out));
      }
      if (sequence != nullptr && sequence->is_list() && sequence->list().kind != Value::ListKind::kView) {
        const std::vector<Value>& items = sequence->list().items;
        if (times <= 0 || items.empty()) return MakeList({}, sequence->list().kind);
        if (static_cast<uint64_t>(times) > limits_.max_collection_size / items.size()) {
          return Invalid(absl::StrCat("repeating a list ", times, " times exceeds the limit of ",
                                      limits_.max_collection_size, " items"));
        }
        std::vector<Value> out;
        for (int64_t i = 0; i < times; ++i) out.insert(out.end(), items.begin(), items.end());
        return MakeList(std::move(out), sequence->list().kind);
      }
      return type_error();
    }
    if (op == "/") {
      if (!ld || !rd) return type_error();
      if (*rd == 0) return Invalid("division by zero");
      return Value::Float(*ld / *rd);
    }
    if (op == "//" || op == "%") {
      if (left.is_string() && op == "%") return Invalid("string formatting with % is not supported");
      if (li && ri) {
        if (*ri == 0) return Invalid(op == "//" ? "integer division by zero" : "integer modulo by zero");
        if (*li == std::numeric_limits<int64_t>::min() && *ri == -1) {
          if (op == "%") return Value::Int(0);
          return Invalid("integer overflow");
        }
        int64_t q = *li / *ri;
        int64_t r = *li % *ri;
        if (r != 0 && ((r < 0) != (*ri < 0))) {  // Python floors
          --q;
          r += *ri;
        }
        return Value::Int(op == "//" ? q : r);
      }
      if (ld && rd) {
        if (*rd == 0) return Invalid("float division by zero");
        if (op == "//") return Value::Float(std::floor(*ld / *rd));
        double r = std::fmod(*ld, *rd);
        if (r != 0 && ((r < 0) != (*rd < 0))) r += *rd;
        return Value::Float(r);
      }
      return type_error();
    }
    if (op == "**") {
      if (li && ri && *ri >= 0) {
        int64_t result = 1, base = *li, exponent = *ri;
        while (exponent > 0) {
          RETURN_IF_ERROR(Step());
          if (exponent & 1) {
            if (__builtin_mul_overflow(result, base, &result)) return Invalid("integer overflow");
          }
          exponent >>= 1;
          if (exponent > 0 && __builtin_mul_overflow(base, base, &base)) return Invalid("integer overflow");
        }
        return Value::Int(result);
      }
      if (ld && rd) {
        if (*ld == 0 && *rd < 0) return Invalid("zero to a negative power");
        return Value::Float(std::pow(*ld, *rd));
      }
      return type_error();
    }
    return Invalid(absl::StrCat("unknown operator ", op));
  }

  // `needle in haystack`.
  absl::StatusOr<bool> Contains(const Value& haystack, const Value& needle) {
    RETURN_IF_ERROR(Scan(haystack));
    switch (haystack.kind()) {
      case Value::Kind::kUndefined:
        return false;
      case Value::Kind::kString:
        if (!needle.is_string()) {
          return Invalid(absl::StrCat("'in <string>' requires a string as left operand, not ", needle.TypeName()));
        }
        return haystack.string_value().find(needle.string_value()) != std::string::npos;
      case Value::Kind::kList:
        for (const Value& item : haystack.list().items) {
          ASSIGN_OR_RETURN(const bool equal, Equal(item, needle, &budget_));
          if (equal) return true;
        }
        return false;
      case Value::Kind::kDict:
        if (needle.kind() == Value::Kind::kDict || needle.kind() == Value::Kind::kNamespace ||
            (needle.is_list() && needle.list().kind != Value::ListKind::kTuple)) {
          return Invalid(absl::StrCat("unhashable type: '", needle.TypeName(), "'"));
        }
        return needle.is_string() && haystack.dict().Find(needle.string_value()) != nullptr;
      default:
        return Invalid(absl::StrCat("argument of type '", haystack.TypeName(), "' is not iterable"));
    }
  }

  absl::StatusOr<bool> CompareOp(const std::string& op, const Value& left, const Value& right) {
    if (op == "==") return Equal(left, right, &budget_);
    if (op == "!=") {
      ASSIGN_OR_RETURN(const bool equal, Equal(left, right, &budget_));
      return !equal;
    }
    if (op == "in") return Contains(right, left);
    if (op == "notin") {
      ASSIGN_OR_RETURN(const bool in, Contains(right, left));
      return !in;
    }
    if (left.is_undefined()) return UndefinedError(left);
    if (right.is_undefined()) return UndefinedError(right);
    ASSIGN_OR_RETURN(const int c, Compare(left, right, &budget_));
    if (op == "<") return c < 0;
    if (op == "<=") return c <= 0;
    if (op == ">") return c > 0;
    if (op == ">=") return c >= 0;
    return Invalid(absl::StrCat("unknown comparison ", op));
  }

  // ---- Calls ----

  absl::StatusOr<Value> Call(const Value& callee, const Args& args) {
    if (callee.is_undefined()) return UndefinedError(callee);
    if (callee.kind() != Value::Kind::kFunction) {
      return Invalid(absl::StrCat("'", callee.TypeName(), "' object is not callable"));
    }
    const FunctionData& f = callee.function();
    if (!f.self.has_value()) return CallGlobal(f.name, args);
    const Value& self = *f.self;
    if (f.name == "cycle" && self.is_int()) {
      if (args.positional.empty()) return Invalid("loop.cycle() needs at least one value");
      return args.positional[static_cast<size_t>(self.int_value()) % args.positional.size()];
    }
    if (self.is_string()) return CallStrMethod(f.name, self.string_value(), args);
    if (self.is_dict()) return CallDictMethod(f.name, self, args);
    return Invalid(absl::StrCat("the method '", f.name, "()' of ", self.TypeName(), " is not supported"));
  }

  absl::StatusOr<Value> CallGlobal(const std::string& name, const Args& args) {
    if (name == "raise_exception") {
      RETURN_IF_ERROR(args.Check("raise_exception()", 1, {}));
      const std::optional<Value> message = args.Get(0, "");
      ASSIGN_OR_RETURN(const std::string text, message.has_value() ? Str(*message) : absl::StatusOr<std::string>(""));
      return Invalid(absl::StrCat("the template raised an error: ", text));
    }
    if (name == "range") {
      RETURN_IF_ERROR(args.Check("range()", 3, {}));
      if (args.positional.empty()) return Invalid("range() needs at least one argument");
      int64_t values[3] = {0, 0, 1};
      for (size_t i = 0; i < args.positional.size(); ++i) {
        ASSIGN_OR_RETURN(values[i], IntArg(args.positional[i], "a range() argument"));
      }
      int64_t start = 0, stop = values[0], step = 1;
      if (args.positional.size() >= 2) {
        start = values[0];
        stop = values[1];
      }
      if (args.positional.size() == 3) step = values[2];
      if (step == 0) return Invalid("range() step must not be zero");
      // Jinja2's sandbox refuses ranges of more than 100000 items (MAX_RANGE).
      const double count = std::max(
          0.0, std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step)));
      if (count > 100000) return Invalid("range() of more than 100000 items (the sandbox's MAX_RANGE)");
      std::vector<Value> items;
      for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) items.push_back(Value::Int(i));
      return MakeList(std::move(items));
    }
    if (name == "namespace" || name == "dict") {
      std::vector<std::pair<std::string, Value>> items;
      if (args.positional.size() > 1) return Invalid(absl::StrCat(name, "() takes at most one positional argument"));
      if (!args.positional.empty()) {
        if (!args.positional[0].is_dict()) return Invalid(absl::StrCat(name, "() takes a dict as positional argument"));
        items = args.positional[0].dict().items;
      }
      for (const auto& [key, value] : args.keyword) items.emplace_back(key, value);
      if (name == "dict") return MakeDict(std::move(items));
      Value ns = Value::Namespace();
      const Value as_dict = Value::Dict(std::move(items));  // keeps the last of repeated keys, in first order
      for (const auto& [key, value] : as_dict.dict().items) ns.ns().attrs.emplace_back(key, value);
      return ns;
    }
    if (name == "strftime_now") {
      RETURN_IF_ERROR(args.Check("strftime_now()", 1, {}));
      ASSIGN_OR_RETURN(const std::string format, StringArg(args.Get(0, ""), "strftime_now()'s format"));
      if (format.find("%f") != std::string::npos || format.find("%:") != std::string::npos) {
        return Invalid("strftime_now(): the directives %f and %: are not supported");
      }
      const time_t now = static_cast<time_t>(now_.has_value() ? *now_ : static_cast<int64_t>(std::time(nullptr)));
      struct tm local;
      localtime_r(&now, &local);
      char buffer[512];
      const size_t n = format.empty() ? 0 : std::strftime(buffer, sizeof(buffer), format.c_str(), &local);
      if (n == 0 && !format.empty()) return Invalid("strftime_now(): the formatted time is empty or too long");
      return Value::String(std::string(buffer, n));
    }
    return Invalid(absl::StrCat("the function '", name, "' is not supported"));
  }

  absl::StatusOr<Value> CallStrMethod(const std::string& name, const std::string& s, const Args& args) {
    RETURN_IF_ERROR(Scan(s));
    if (!SupportedStrMethods().contains(name))
      return Invalid(absl::StrCat("the string method '", name, "()' is not supported"));
    const auto optional_string = [&](size_t index, absl::string_view key,
                                     absl::string_view what) -> absl::StatusOr<std::optional<std::string>> {
      const std::optional<Value> v = args.Get(index, key);
      if (!v.has_value() || v->is_none()) return std::optional<std::string>();
      ASSIGN_OR_RETURN(std::string text, StringArg(v, what));
      return std::optional<std::string>(std::move(text));
    };
    if (name == "startswith" || name == "endswith") {
      RETURN_IF_ERROR(args.Check(name, 1, {}));
      const std::optional<Value> arg = args.Get(0, "");
      std::vector<std::string> candidates;
      if (arg.has_value() && arg->is_list() && arg->list().kind == Value::ListKind::kTuple) {
        for (const Value& item : arg->list().items) {
          ASSIGN_OR_RETURN(std::string text, StringArg(item, absl::StrCat(name, "()'s argument")));
          candidates.push_back(std::move(text));
        }
      } else {
        ASSIGN_OR_RETURN(std::string text, StringArg(arg, absl::StrCat(name, "()'s argument")));
        candidates.push_back(std::move(text));
      }
      for (const std::string& c : candidates) {
        if (name == "startswith" ? absl::StartsWith(s, c) : absl::EndsWith(s, c)) return Value::Bool(true);
      }
      return Value::Bool(false);
    }
    if (name == "split") {
      RETURN_IF_ERROR(args.Check(name, 2, {"sep", "maxsplit"}));
      ASSIGN_OR_RETURN(const std::optional<std::string> sep, optional_string(0, "sep", "split()'s separator"));
      int64_t max_split = -1;
      if (const std::optional<Value> m = args.Get(1, "maxsplit"); m.has_value()) {
        ASSIGN_OR_RETURN(max_split, IntArg(m, "split()'s maxsplit"));
      }
      ASSIGN_OR_RETURN(const std::vector<std::string> parts, PythonSplit(s, sep, max_split));
      RETURN_IF_ERROR(Allocate(s.size()));
      std::vector<Value> items;
      for (const std::string& part : parts) items.push_back(Value::String(part));
      return MakeList(std::move(items));
    }
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      RETURN_IF_ERROR(args.Check(name, 1, {"chars"}));
      ASSIGN_OR_RETURN(const std::optional<std::string> chars,
                       optional_string(0, "chars", absl::StrCat(name, "()'s chars")));
      return MakeString(PythonStrip(s, chars, name != "rstrip", name != "lstrip"));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      RETURN_IF_ERROR(CheckAsciiCase(s, absl::StrCat(name, "()")));
      if (name == "upper") return MakeString(AsciiUpper(s));
      if (name == "lower") return MakeString(AsciiLower(s));
      if (name == "title") return MakeString(PythonTitle(s));
      return MakeString(PythonCapitalize(s));
    }
    if (name == "replace") {
      RETURN_IF_ERROR(args.Check(name, 3, {"count"}));
      ASSIGN_OR_RETURN(const std::string old, StringArg(args.Get(0, ""), "replace()'s old"));
      ASSIGN_OR_RETURN(const std::string replacement, StringArg(args.Get(1, ""), "replace()'s new"));
      int64_t count = -1;
      if (const std::optional<Value> c = args.Get(2, "count"); c.has_value()) {
        ASSIGN_OR_RETURN(count, IntArg(c, "replace()'s count"));
      }
      return MakeReplaced(s, old, replacement, count);
    }
    if (name == "find" || name == "count") {
      RETURN_IF_ERROR(args.Check(name, 1, {}));
      ASSIGN_OR_RETURN(const std::string sub, StringArg(args.Get(0, ""), absl::StrCat(name, "()'s argument")));
      if (name == "find") {
        const size_t at = s.find(sub);
        return Value::Int(
            at == std::string::npos ? -1 : static_cast<int64_t>(CharacterCount(absl::string_view(s).substr(0, at))));
      }
      if (sub.empty()) return Value::Int(static_cast<int64_t>(CharacterCount(s)) + 1);
      int64_t n = 0;
      for (size_t at = s.find(sub); at != std::string::npos; at = s.find(sub, at + sub.size())) ++n;
      return Value::Int(n);
    }
    if (name == "join") {
      RETURN_IF_ERROR(args.Check(name, 1, {}));
      const std::optional<Value> iterable = args.Get(0, "");
      if (!iterable.has_value()) return Invalid("join() takes one argument");
      ASSIGN_OR_RETURN(const std::vector<Value> items, Iterate(*iterable));
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        if (!items[i].is_string())
          return Invalid(absl::StrCat("join(): item ", i, " is a ", items[i].TypeName(), ", not a str"));
        RETURN_IF_ERROR(CheckLength(out.size() + s.size() + items[i].string_value().size()));
        if (i > 0) out += s;
        out += items[i].string_value();
      }
      return MakeString(std::move(out));
    }
    return Invalid(absl::StrCat("the string method '", name, "()' is not supported"));
  }

  absl::StatusOr<Value> MakeReplaced(const std::string& s, const std::string& old, const std::string& replacement,
                                     int64_t count) {
    // Bound the result before building it.
    if (!old.empty() && replacement.size() > old.size()) {
      size_t occurrences = 0;
      for (size_t at = s.find(old); at != std::string::npos && (count < 0 || static_cast<int64_t>(occurrences) < count);
           at = s.find(old, at + old.size())) {
        ++occurrences;
      }
      RETURN_IF_ERROR(CheckString(s.size() + occurrences * (replacement.size() - old.size())));
    } else if (old.empty()) {
      RETURN_IF_ERROR(CheckString(s.size() + (CharacterCount(s) + 1) * replacement.size()));
    }
    return MakeString(PythonReplace(s, old, replacement, count));
  }

  absl::StatusOr<Value> CallDictMethod(const std::string& name, const Value& self, const Args& args) {
    if (!SupportedDictMethods().contains(name))
      return Invalid(absl::StrCat("the dict method '", name, "()' is not supported"));
    const DictData& dict = self.dict();
    if (name == "get") {
      RETURN_IF_ERROR(args.Check(name, 2, {}));
      const std::optional<Value> key = args.Get(0, "");
      if (!key.has_value()) return Invalid("get() takes a key");
      if (key->is_string()) {
        if (const Value* value = dict.Find(key->string_value())) return *value;
      }
      return args.Get(1, "").value_or(Value::MakeNone());
    }
    RETURN_IF_ERROR(args.Check(name, 0, {}));
    std::vector<Value> items;
    for (const auto& [key, value] : dict.items) {
      if (name == "items") {
        items.push_back(Value::List({Value::String(key), value}, Value::ListKind::kTuple));
      } else {
        items.push_back(name == "keys" ? Value::String(key) : value);
      }
    }
    return MakeList(std::move(items), Value::ListKind::kView);
  }

  // ---- Filters ----

  absl::StatusOr<Value> ApplyFilter(const std::string& name, const Value& value, const Args& args) {
    RETURN_IF_ERROR(Scan(value));
    const auto text = [&]() { return Str(value); };
    if (name == "length" || name == "count") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      switch (value.kind()) {
        case Value::Kind::kUndefined:
          return Value::Int(0);
        case Value::Kind::kString:
          return Value::Int(static_cast<int64_t>(CharacterCount(value.string_value())));
        case Value::Kind::kList:
          if (value.list().kind == Value::ListKind::kView) break;
          return Value::Int(static_cast<int64_t>(value.list().items.size()));
        case Value::Kind::kDict:
          return Value::Int(static_cast<int64_t>(value.dict().items.size()));
        default:
          break;
      }
      return Invalid(absl::StrCat("object of type '", value.TypeName(), "' has no len()"));
    }
    if (name == "trim") {
      RETURN_IF_ERROR(args.Check(name, 1, {"chars"}));
      ASSIGN_OR_RETURN(const std::string s, text());
      std::optional<std::string> chars;
      if (const std::optional<Value> c = args.Get(0, "chars"); c.has_value() && !c->is_none()) {
        ASSIGN_OR_RETURN(chars, StringArg(c, "trim's chars"));
      }
      return MakeString(PythonStrip(s, chars, true, true));
    }
    if (name == "tojson") {
      // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
      RETURN_IF_ERROR(args.Check(name, 4, {"ensure_ascii", "indent", "separators", "sort_keys"}));
      JsonOptions options;
      if (const std::optional<Value> v = args.Get(0, "ensure_ascii"); v.has_value()) options.ensure_ascii = v->Truthy();
      if (const std::optional<Value> indent = args.Get(1, "indent"); indent.has_value() && !indent->is_none()) {
        ASSIGN_OR_RETURN(const int64_t n, IntArg(indent, "tojson's indent"));
        if (n < 0 || n > 64) return Invalid("tojson's indent must be in [0, 64]");
        options.indent = static_cast<int>(n);
      }
      if (const std::optional<Value> v = args.Get(2, "separators"); v.has_value() && !v->is_none()) {
        if (!v->is_list() || v->list().kind == Value::ListKind::kView || v->list().items.size() != 2 ||
            !v->list().items[0].is_string() || !v->list().items[1].is_string()) {
          return Invalid("tojson's separators must be a pair of strings");
        }
        options.item_separator = v->list().items[0].string_value();
        options.key_separator = v->list().items[1].string_value();
      }
      if (const std::optional<Value> v = args.Get(3, "sort_keys"); v.has_value()) options.sort_keys = v->Truthy();
      std::string out;
      RETURN_IF_ERROR(AppendJson(value, options, 0, limits_.max_output_bytes, &out));
      return MakeString(std::move(out));
    }
    if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      ASSIGN_OR_RETURN(const std::string s, text());
      RETURN_IF_ERROR(CheckAsciiCase(s, absl::StrCat("the filter ", name)));
      if (name == "upper") return MakeString(AsciiUpper(s));
      if (name == "lower") return MakeString(AsciiLower(s));
      if (name == "capitalize") return MakeString(PythonCapitalize(s));
      return MakeString(JinjaTitle(s));
    }
    if (name == "join") {
      RETURN_IF_ERROR(args.Check(name, 2, {"d", "attribute"}));
      std::string separator;
      if (const std::optional<Value> d = args.Get(0, "d"); d.has_value()) {
        ASSIGN_OR_RETURN(separator, Str(*d));
      }
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
      if (const std::optional<Value> attribute = args.Get(1, "attribute"); attribute.has_value()) {
        for (Value& item : items) {
          ASSIGN_OR_RETURN(item, GetPath(item, *attribute));
        }
      }
      std::string out;
      for (size_t i = 0; i < items.size(); ++i) {
        ASSIGN_OR_RETURN(const std::string s, Str(items[i]));
        RETURN_IF_ERROR(CheckLength(out.size() + separator.size() + s.size()));
        if (i > 0) out += separator;
        out += s;
      }
      return MakeString(std::move(out));
    }
    if (name == "first" || name == "last") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      ASSIGN_OR_RETURN(const std::vector<Value> items, Iterate(value));
      if (items.empty()) return Value::MakeUndefined(absl::StrCat("the ", name, " item"));
      return name == "first" ? items.front() : items.back();
    }
    if (name == "list") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
      return MakeList(std::move(items));
    }
    if (name == "reverse") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      if (value.is_string()) {
        RETURN_IF_ERROR(Step(static_cast<int64_t>(value.string_value().size() / 4)));
        std::vector<absl::string_view> chars = Characters(value.string_value());
        std::string out;
        for (auto it = chars.rbegin(); it != chars.rend(); ++it) out.append(it->data(), it->size());
        return MakeString(std::move(out));
      }
      ASSIGN_OR_RETURN(std::vector<Value> items, Iterate(value));
      std::reverse(items.begin(), items.end());
      return MakeList(std::move(items), Value::ListKind::kView);
    }
    if (name == "string") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      ASSIGN_OR_RETURN(std::string s, text());
      return Value::String(std::move(s));
    }
    if (name == "safe") return value;
    if (name == "e" || name == "escape") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      ASSIGN_OR_RETURN(const std::string s, text());
      return MakeString(
          absl::StrReplaceAll(s, {{"&", "&amp;"}, {"<", "&lt;"}, {">", "&gt;"}, {"\"", "&#34;"}, {"'", "&#39;"}}));
    }
    if (name == "int") {
      RETURN_IF_ERROR(args.Check(name, 1, {"default"}));
      const Value fallback = args.Get(0, "default").value_or(Value::Int(0));
      if (value.is_undefined()) return UndefinedError(value);
      if (const std::optional<int64_t> i = AsInt(value); i.has_value()) return Value::Int(*i);
      if (value.kind() == Value::Kind::kFloat) {
        const double f = value.float_value();
        if (std::isfinite(f) && std::fabs(f) < 9.2e18) return Value::Int(static_cast<int64_t>(f));
        return fallback;
      }
      if (value.is_string()) {
        const std::string s = PythonStrip(value.string_value(), std::nullopt, true, true);
        int64_t i;
        if (absl::SimpleAtoi(s, &i)) return Value::Int(i);
        double f;
        if (absl::SimpleAtod(s, &f) && std::isfinite(f) && std::fabs(f) < 9.2e18)
          return Value::Int(static_cast<int64_t>(f));
      }
      return fallback;
    }
    if (name == "float") {
      RETURN_IF_ERROR(args.Check(name, 1, {"default"}));
      const Value fallback = args.Get(0, "default").value_or(Value::Float(0.0));
      if (value.is_undefined()) return UndefinedError(value);
      if (const std::optional<double> d = AsDouble(value); d.has_value()) return Value::Float(*d);
      if (value.is_string()) {
        double f;
        if (absl::SimpleAtod(PythonStrip(value.string_value(), std::nullopt, true, true), &f)) return Value::Float(f);
      }
      return fallback;
    }
    if (name == "abs") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      if (const std::optional<int64_t> i = AsInt(value); i.has_value()) {
        if (*i == std::numeric_limits<int64_t>::min()) return Invalid("integer overflow");
        return Value::Int(*i < 0 ? -*i : *i);
      }
      if (value.kind() == Value::Kind::kFloat) return Value::Float(std::fabs(value.float_value()));
      return Invalid(absl::StrCat("bad operand type for abs(): '", value.TypeName(), "'"));
    }
    if (name == "default" || name == "d") {
      RETURN_IF_ERROR(args.Check(name, 2, {"default_value", "boolean"}));
      const Value fallback = args.Get(0, "default_value").value_or(Value::String(""));
      const bool boolean = args.Get(1, "boolean").value_or(Value::Bool(false)).Truthy();
      if (value.is_undefined() || (boolean && !value.Truthy())) return fallback;
      return value;
    }
    if (name == "items") {
      RETURN_IF_ERROR(args.Check(name, 0, {}));
      if (value.is_undefined()) return MakeList({}, Value::ListKind::kView);
      if (!value.is_dict()) return Invalid(absl::StrCat("the filter items needs a dict, got ", value.TypeName()));
      return CallDictMethod("items", value, Args{});
    }
    if (name == "indent") {
      RETURN_IF_ERROR(args.Check(name, 3, {"width", "first", "blank"}));
      ASSIGN_OR_RETURN(const std::string s, text());
      std::string indentation(4, ' ');
      if (const std::optional<Value> width = args.Get(0, "width"); width.has_value()) {
        if (width->is_string()) {
          indentation = width->string_value();
        } else {
          ASSIGN_OR_RETURN(const int64_t n, IntArg(width, "indent's width"));
          if (n < 0 || n > 1024) return Invalid("indent's width must be in [0, 1024]");
          indentation.assign(static_cast<size_t>(n), ' ');
        }
      }
      const bool first = args.Get(1, "first").value_or(Value::Bool(false)).Truthy();
      const bool blank = args.Get(2, "blank").value_or(Value::Bool(false)).Truthy();
      return MakeString(JinjaIndent(s, indentation, first, blank));
    }
    if (name == "replace") {
      RETURN_IF_ERROR(args.Check(name, 3, {"old", "new", "count"}));
      ASSIGN_OR_RETURN(const std::string s, text());
      const std::optional<Value> old = args.Get(0, "old");
      const std::optional<Value> replacement = args.Get(1, "new");
      if (!old.has_value() || !replacement.has_value()) return Invalid("replace takes old and new");
      ASSIGN_OR_RETURN(const std::string old_text, Str(*old));
      ASSIGN_OR_RETURN(const std::string new_text, Str(*replacement));
      int64_t count = -1;
      if (const std::optional<Value> c = args.Get(2, "count"); c.has_value() && !c->is_none()) {
        ASSIGN_OR_RETURN(count, IntArg(c, "replace's count"));
      }
      return MakeReplaced(s, old_text, new_text, count);
    }
    if (name == "map") return FilterMap(value, args);
    if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
      return FilterSelect(name, value, args);
    }
    return Invalid(absl::StrCat("the filter '", name, "' is not supported"));
  }

  // Jinja2's title filter: each word (split at - white space ( { [ <) gets its first character upper-cased and the
  // rest lower-cased.
  static std::string JinjaTitle(absl::string_view s) {
    std::string out;
    bool word_start = true;
    for (size_t pos = 0; pos < s.size();) {
      const internal::Utf8Char c = internal::NextUtf8Char(s, pos);
      const absl::string_view unit = s.substr(pos, static_cast<size_t>(c.length));
      pos += unit.size();
      const bool separator = c.valid && (c.code_point == '-' || c.code_point == '(' || c.code_point == '{' ||
                                         c.code_point == '[' || c.code_point == '<' || IsPythonSpace(c.code_point));
      if (separator) {
        out.append(unit.data(), unit.size());
        word_start = true;
        continue;
      }
      out += word_start ? AsciiUpper(unit) : AsciiLower(unit);
      word_start = false;
    }
    return out;
  }

  // Jinja2's indent filter.
  static std::string JinjaIndent(const std::string& s, const std::string& indentation, bool first, bool blank) {
    const std::vector<std::string> lines = PythonSplitLines(s + "\n");
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) {
        out += "\n";
        if (blank || !lines[i].empty()) out += indentation;
      }
      out += lines[i];
    }
    if (first) out = indentation + out;
    return out;
  }

  // item.a.b (Jinja2's attribute paths; a numeric part indexes).
  absl::StatusOr<Value> GetPath(const Value& item, const Value& path) {
    if (!path.is_string()) return GetItem(item, path);
    Value current = item;
    for (const absl::string_view part : absl::StrSplit(path.string_value(), '.')) {
      int64_t index;
      if (absl::SimpleAtoi(part, &index)) {
        ASSIGN_OR_RETURN(current, GetItem(current, Value::Int(index)));
      } else {
        ASSIGN_OR_RETURN(current, GetItem(current, Value::String(std::string(part))));
      }
    }
    return current;
  }

  absl::StatusOr<Value> FilterMap(const Value& value, const Args& args) {
    ASSIGN_OR_RETURN(const std::vector<Value> items, Iterate(value));
    std::vector<Value> out;
    if (args.positional.empty()) {
      RETURN_IF_ERROR(args.Check("map", 0, {"attribute", "default"}));
      const std::optional<Value> attribute = args.Get(99, "attribute");
      if (!attribute.has_value()) return Invalid("map needs a filter name or attribute=");
      const std::optional<Value> fallback = args.Get(99, "default");
      for (const Value& item : items) {
        ASSIGN_OR_RETURN(Value mapped, GetPath(item, *attribute));
        if (mapped.is_undefined() && fallback.has_value()) mapped = *fallback;
        out.push_back(std::move(mapped));
      }
      return MakeList(std::move(out), Value::ListKind::kView);
    }
    ASSIGN_OR_RETURN(const std::string filter, StringArg(args.positional[0], "map's filter name"));
    if (!FilterNames().contains(filter))
      return Invalid(absl::StrCat("map: the filter '", filter, "' is not supported"));
    Args rest{std::vector<Value>(args.positional.begin() + 1, args.positional.end()), args.keyword};
    for (const Value& item : items) {
      ASSIGN_OR_RETURN(Value mapped, ApplyFilter(filter, item, rest));
      out.push_back(std::move(mapped));
    }
    return MakeList(std::move(out), Value::ListKind::kView);
  }

  absl::StatusOr<Value> FilterSelect(const std::string& name, const Value& value, const Args& args) {
    if (!args.keyword.empty()) return Invalid(absl::StrCat("the filter ", name, " takes no keyword arguments"));
    ASSIGN_OR_RETURN(const std::vector<Value> items, Iterate(value));
    const bool by_attribute = name == "selectattr" || name == "rejectattr";
    const bool keep_when = name == "select" || name == "selectattr";
    size_t next = 0;
    std::optional<Value> attribute;
    if (by_attribute) {
      if (args.positional.empty()) return Invalid(absl::StrCat(name, " needs an attribute"));
      attribute = args.positional[next++];
    }
    std::optional<std::string> test;
    if (next < args.positional.size()) {
      ASSIGN_OR_RETURN(test, StringArg(args.positional[next++], absl::StrCat(name, "'s test name")));
      if (!TestNames().contains(*test)) return Invalid(absl::StrCat(name, ": the test '", *test, "' is not supported"));
    }
    Args test_args{
        std::vector<Value>(args.positional.begin() + static_cast<std::ptrdiff_t>(next), args.positional.end()), {}};
    std::vector<Value> out;
    for (const Value& item : items) {
      Value subject = item;
      if (attribute.has_value()) {
        ASSIGN_OR_RETURN(subject, GetPath(item, *attribute));
      }
      bool passes = subject.Truthy();
      if (test.has_value()) {
        ASSIGN_OR_RETURN(passes, ApplyTest(*test, subject, test_args));
      }
      if (passes == keep_when) out.push_back(item);
    }
    return MakeList(std::move(out), Value::ListKind::kView);
  }

  // ---- Tests ----

  absl::StatusOr<bool> ApplyTest(const std::string& name, const Value& value, const Args& args) {
    const Value::Kind k = value.kind();
    const auto other = [&]() -> absl::StatusOr<Value> {
      RETURN_IF_ERROR(args.Check(absl::StrCat("the test ", name), 1, {}));
      const std::optional<Value> v = args.Get(0, "");
      if (!v.has_value()) return Invalid(absl::StrCat("the test ", name, " needs an argument"));
      return *v;
    };
    if (name == "defined") return k != Value::Kind::kUndefined;
    if (name == "undefined") return k == Value::Kind::kUndefined;
    if (name == "none") return k == Value::Kind::kNone;
    if (name == "boolean") return k == Value::Kind::kBool;
    if (name == "false") return k == Value::Kind::kBool && !value.bool_value();
    if (name == "true") return k == Value::Kind::kBool && value.bool_value();
    if (name == "integer") return k == Value::Kind::kInt;
    if (name == "float") return k == Value::Kind::kFloat;
    if (name == "number") return k == Value::Kind::kInt || k == Value::Kind::kFloat || k == Value::Kind::kBool;
    if (name == "string") return k == Value::Kind::kString;
    if (name == "mapping") return k == Value::Kind::kDict;
    if (name == "iterable") {
      return k == Value::Kind::kString || k == Value::Kind::kList || k == Value::Kind::kDict ||
             k == Value::Kind::kUndefined;
    }
    if (name == "sequence") {
      return k == Value::Kind::kString || k == Value::Kind::kDict || k == Value::Kind::kUndefined ||
             (k == Value::Kind::kList && value.list().kind != Value::ListKind::kView);
    }
    if (name == "callable") return k == Value::Kind::kFunction;
    if (name == "sameas") {
      ASSIGN_OR_RETURN(const Value o, other());
      return value.SameAs(o);
    }
    if (name == "even" || name == "odd" || name == "divisibleby") {
      // value % 2 == 0, value % 2 == 1, value % n == 0, with Python's %.
      Value divisor = Value::Int(2);
      if (name == "divisibleby") {
        ASSIGN_OR_RETURN(divisor, other());
      }
      if (value.is_string()) return Invalid(absl::StrCat("the test ", name, " needs a number, got str"));
      ASSIGN_OR_RETURN(const Value remainder, BinaryOp("%", value, divisor));
      return Equal(remainder, Value::Int(name == "odd" ? 1 : 0), &budget_);
    }
    if (name == "lower" || name == "upper") {
      if (!value.is_string())
        return Invalid(absl::StrCat("the test ", name, " needs a string, got ", value.TypeName()));
      RETURN_IF_ERROR(CheckAsciiCase(value.string_value(), absl::StrCat("the test ", name)));
      bool any_cased = false;
      for (const char c : value.string_value()) {
        const bool upper = c >= 'A' && c <= 'Z', lower = c >= 'a' && c <= 'z';
        any_cased = any_cased || upper || lower;
        if (name == "lower" ? upper : lower) return false;
      }
      return any_cased;
    }
    if (name == "in") {
      ASSIGN_OR_RETURN(const Value o, other());
      return Contains(o, value);
    }
    static const auto* const kComparisons = new absl::flat_hash_map<std::string, std::string>{
        {"eq", "=="}, {"equalto", "=="},    {"==", "=="}, {"ne", "!="}, {"!=", "!="},
        {"lt", "<"},  {"lessthan", "<"},    {"<", "<"},   {"le", "<="}, {"<=", "<="},
        {"gt", ">"},  {"greaterthan", ">"}, {">", ">"},   {"ge", ">="}, {">=", ">="}};
    if (const auto it = kComparisons->find(name); it != kComparisons->end()) {
      ASSIGN_OR_RETURN(const Value o, other());
      return CompareOp(it->second, value, o);
    }
    return Invalid(absl::StrCat("the test '", name, "' is not supported"));
  }

  const Limits& limits_;
  std::optional<int64_t> now_;
  absl::flat_hash_map<std::string, Value> context_;
  std::vector<Frame> frames_;
  std::string* out_ = nullptr;
  Budget budget_;
  size_t allocated_ = 0;
};

}  // namespace

bool IsGlobalFunction(absl::string_view name) { return GlobalFunctions().contains(name); }

bool IsMethodName(absl::string_view name) {
  return SupportedStrMethods().contains(name) || SupportedDictMethods().contains(name) || name == "cycle";
}

bool IsFilterName(absl::string_view name) { return FilterNames().contains(name); }
bool IsTestName(absl::string_view name) { return TestNames().contains(name); }

Template::Template(std::unique_ptr<Ast> ast) : ast_(std::move(ast)) {}
Template::~Template() = default;

absl::StatusOr<std::unique_ptr<Template>> Template::Parse(absl::string_view source) {
  ASSIGN_OR_RETURN(std::unique_ptr<Ast> ast, ParseTemplate(source));
  return std::unique_ptr<Template>(new Template(std::move(ast)));
}

absl::StatusOr<std::string> Template::Render(const std::vector<std::pair<std::string, Value>>& variables,
                                             const Limits& limits, std::optional<int64_t> now_unix_seconds) const {
  Renderer renderer(limits, variables, now_unix_seconds);
  return renderer.Run(*ast_);
}

}  // namespace rlhf::tokenizer::jinja
