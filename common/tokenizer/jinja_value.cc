// Jinja values (jinja.h) and the Python string, repr and JSON rules they follow.
#include "common/tokenizer/jinja_value.h"

#include <utf8proc.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/tokenizer/jinja_builtins.h"
#include "common/tokenizer/utf8.h"
#include "common/util/status_macros.h"

namespace rlhf::tokenizer::jinja {

Value Value::List(std::vector<Value> items, ListKind kind) {
  auto data = std::make_shared<ListData>();
  int depth = 0;
  for (const Value& item : items) {
    depth = std::max(depth, item.depth());
    data->holds_namespace = data->holds_namespace || item.HoldsNamespace();
  }
  data->items = std::move(items);
  data->kind = kind;
  data->depth = depth + 1;
  return Value(std::shared_ptr<const ListData>(std::move(data)));
}

Value Value::Dict(std::vector<std::pair<std::string, Value>> items) {
  auto data = std::make_shared<DictData>();
  int depth = 0;
  const bool indexed = items.size() > DictData::kLinearSearchMax;
  data->items.reserve(items.size());
  for (auto& [key, value] : items) {
    depth = std::max(depth, value.depth());
    data->holds_namespace = data->holds_namespace || value.HoldsNamespace();
    Value* existing = nullptr;
    if (indexed) {
      const auto [it, inserted] = data->index.try_emplace(key, data->items.size());
      if (!inserted) existing = &data->items[it->second].second;
    } else {
      for (auto& [k, v] : data->items) {
        if (k == key) existing = &v;
      }
    }
    if (existing != nullptr) {
      *existing = std::move(value);
    } else {
      data->items.emplace_back(std::move(key), std::move(value));
    }
  }
  if (!indexed) data->index.clear();
  data->depth = depth + 1;
  return Value(std::shared_ptr<const DictData>(std::move(data)));
}

Value Value::Namespace() { return Value(std::make_shared<NamespaceData>()); }

Value Value::Function(std::string name, std::optional<Value> self) {
  auto data = std::make_shared<FunctionData>();
  data->name = std::move(name);
  data->self = std::move(self);
  return Value(std::shared_ptr<const FunctionData>(std::move(data)));
}

int Value::depth() const {
  switch (kind()) {
    case Kind::kList:
      return list().depth;
    case Kind::kDict:
      return dict().depth;
    default:
      return 0;
  }
}

bool Value::HoldsNamespace() const {
  switch (kind()) {
    case Kind::kNamespace:
      return true;
    case Kind::kList:
      return list().holds_namespace;
    case Kind::kDict:
      return dict().holds_namespace;
    default:
      return false;
  }
}

bool Value::Truthy() const {
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return bool_value();
    case Kind::kInt:
      return int_value() != 0;
    case Kind::kFloat:
      return float_value() != 0.0;
    case Kind::kString:
      return !string_value().empty();
    case Kind::kList:
      return !list().items.empty();
    case Kind::kDict:
      return !dict().items.empty();
    case Kind::kNamespace:
    case Kind::kFunction:
      return true;
  }
  return false;
}

std::string Value::TypeName() const {
  switch (kind()) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "NoneType";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "str";
    case Kind::kList:
      return list().kind == ListKind::kTuple ? "tuple" : list().kind == ListKind::kView ? "iterator" : "list";
    case Kind::kDict:
      return "dict";
    case Kind::kNamespace:
      return "Namespace";
    case Kind::kFunction:
      return "function";
  }
  return "value";
}

bool Value::SameAs(const Value& other) const {
  if (kind() != other.kind()) return false;
  switch (kind()) {
    case Kind::kUndefined:
    case Kind::kNone:
      return true;
    case Kind::kBool:
      return bool_value() == other.bool_value();
    case Kind::kInt:
      return int_value() == other.int_value();
    case Kind::kFloat:
      return float_value() == other.float_value();
    case Kind::kString:
      return &string_value() == &other.string_value();
    case Kind::kList:
      return &list() == &other.list();
    case Kind::kDict:
      return &dict() == &other.dict();
    case Kind::kNamespace:
      return &ns() == &other.ns();
    case Kind::kFunction:
      return &function() == &other.function();
  }
  return false;
}

// ---- Python strings ----

bool IsPythonSpace(uint32_t c) { return internal::IsUnicodeWhiteSpace(c) || (c >= 0x1C && c <= 0x1F); }

bool IsAscii(absl::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

std::vector<absl::string_view> Characters(absl::string_view s) {
  std::vector<absl::string_view> out;
  out.reserve(s.size());
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = static_cast<size_t>(internal::NextUtf8Char(s, pos).length);
    out.push_back(s.substr(pos, n));
    pos += n;
  }
  return out;
}

size_t CharacterCount(absl::string_view s) {
  size_t n = 0;
  for (size_t pos = 0; pos < s.size(); ++n) pos += static_cast<size_t>(internal::NextUtf8Char(s, pos).length);
  return n;
}

namespace {

// The code point of a character unit, or -1 for a unit of invalid UTF-8.
int64_t CodePoint(absl::string_view unit) {
  const internal::Utf8Char c = internal::NextUtf8Char(unit, 0);
  return c.valid ? static_cast<int64_t>(c.code_point) : -1;
}

bool IsSpaceUnit(absl::string_view unit) {
  const int64_t cp = CodePoint(unit);
  return cp >= 0 && IsPythonSpace(static_cast<uint32_t>(cp));
}

bool IsCased(uint32_t cp) {
  const utf8proc_category_t category = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
  if (category == UTF8PROC_CATEGORY_LU || category == UTF8PROC_CATEGORY_LL || category == UTF8PROC_CATEGORY_LT) {
    return true;
  }
  const auto c = static_cast<utf8proc_int32_t>(cp);
  return utf8proc_toupper(c) != c || utf8proc_tolower(c) != c || utf8proc_totitle(c) != c;
}

bool IsPrintable(uint32_t cp) {
  if (cp == ' ') return true;
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS:
      return false;
    default:
      return true;
  }
}

}  // namespace

absl::Status CheckAsciiCase(absl::string_view s, absl::string_view operation) {
  for (size_t pos = 0; pos < s.size();) {
    const internal::Utf8Char c = internal::NextUtf8Char(s, pos);
    if (c.valid && c.code_point >= 0x80 && IsCased(c.code_point)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s of a non-ASCII letter (U+%04X) is not supported (Unicode case mapping is not implemented)", operation,
          c.code_point));
    }
    pos += static_cast<size_t>(c.length);
  }
  return absl::OkStatus();
}

std::string AsciiUpper(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::string AsciiLower(absl::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string PythonTitle(absl::string_view s) {
  std::string out(s);
  bool previous_cased = false;
  for (char& c : out) {
    const bool upper = c >= 'A' && c <= 'Z';
    const bool lower = c >= 'a' && c <= 'z';
    if (previous_cased) {
      if (upper) c = static_cast<char>(c - 'A' + 'a');
    } else if (lower) {
      c = static_cast<char>(c - 'a' + 'A');
    }
    previous_cased = upper || lower;
  }
  return out;
}

std::string PythonCapitalize(absl::string_view s) {
  std::string out = AsciiLower(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

std::string PythonStrip(absl::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  std::vector<absl::string_view> strip_units;
  if (chars.has_value()) strip_units = Characters(*chars);
  const auto strip = [&](absl::string_view unit) {
    if (!chars.has_value()) return IsSpaceUnit(unit);
    return std::find(strip_units.begin(), strip_units.end(), unit) != strip_units.end();
  };
  // One pass: where the first kept unit starts and where the last kept unit ends.
  size_t begin = s.size(), end = 0;
  bool seen_kept = false;
  for (size_t pos = 0; pos < s.size();) {
    const size_t n = static_cast<size_t>(internal::NextUtf8Char(s, pos).length);
    const absl::string_view unit = s.substr(pos, n);
    if (!strip(unit)) {
      if (!seen_kept) begin = pos;
      seen_kept = true;
      end = pos + n;
    }
    pos += n;
  }
  if (!seen_kept) return "";
  if (!left) begin = 0;
  if (!right) end = s.size();
  return std::string(s.substr(begin, end - begin));
}

absl::StatusOr<std::vector<std::string>> PythonSplit(absl::string_view s, const std::optional<std::string>& sep,
                                                     int64_t max_split) {
  std::vector<std::string> out;
  if (!sep.has_value()) {
    size_t pos = 0;
    const auto unit_at = [&](size_t p) {
      return s.substr(p, static_cast<size_t>(internal::NextUtf8Char(s, p).length));
    };
    while (true) {
      while (pos < s.size() && IsSpaceUnit(unit_at(pos))) pos += unit_at(pos).size();
      if (pos >= s.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(out.size()) >= max_split) {
        out.emplace_back(s.substr(pos));
        break;
      }
      size_t end = pos;
      while (end < s.size() && !IsSpaceUnit(unit_at(end))) end += unit_at(end).size();
      out.emplace_back(s.substr(pos, end - pos));
      pos = end;
    }
    return out;
  }
  if (sep->empty()) return absl::InvalidArgumentError("split() with an empty separator");
  size_t start = 0;
  while (max_split < 0 || static_cast<int64_t>(out.size()) < max_split) {
    const size_t at = s.find(*sep, start);
    if (at == absl::string_view::npos) break;
    out.emplace_back(s.substr(start, at - start));
    start = at + sep->size();
  }
  out.emplace_back(s.substr(start));
  return out;
}

std::string PythonReplace(absl::string_view s, absl::string_view old, absl::string_view replacement, int64_t count) {
  std::string out;
  if (old.empty()) {
    int64_t done = 0;
    for (size_t pos = 0; pos < s.size();) {
      const size_t n = static_cast<size_t>(internal::NextUtf8Char(s, pos).length);
      if (count < 0 || done < count) {
        out.append(replacement.data(), replacement.size());
        ++done;
      }
      out.append(s.data() + pos, n);
      pos += n;
    }
    if (count < 0 || done < count) out.append(replacement.data(), replacement.size());
    return out;
  }
  size_t start = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    const size_t at = s.find(old, start);
    if (at == absl::string_view::npos) break;
    out.append(s.data() + start, at - start);
    out.append(replacement.data(), replacement.size());
    start = at + old.size();
    ++done;
  }
  out.append(s.data() + start, s.size() - start);
  return out;
}

std::vector<std::string> PythonSplitLines(absl::string_view s) {
  std::vector<std::string> lines;
  size_t line_start = 0;
  size_t pos = 0;
  while (pos < s.size()) {
    const internal::Utf8Char c = internal::NextUtf8Char(s, pos);
    const uint32_t cp = c.valid ? c.code_point : 0xFFFFFFFF;
    const bool is_break = cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
                          cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
    if (!is_break) {
      pos += static_cast<size_t>(c.length);
      continue;
    }
    lines.emplace_back(s.substr(line_start, pos - line_start));
    pos += static_cast<size_t>(c.length);
    if (cp == '\r' && pos < s.size() && s[pos] == '\n') ++pos;
    line_start = pos;
  }
  if (line_start < s.size()) lines.emplace_back(s.substr(line_start));
  return lines;
}

// ---- repr, str and JSON ----

std::string FloatRepr(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buffer[64];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), v, std::chars_format::scientific);
  std::string text(buffer, result.ptr);
  std::string sign;
  if (text[0] == '-') {
    sign = "-";
    text.erase(0, 1);
  }
  const size_t e_pos = text.find('e');
  std::string digits = text.substr(0, e_pos);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int exponent = std::stoi(text.substr(e_pos + 1));
  const int point = exponent + 1;  // digits before the decimal point
  const int n = static_cast<int>(digits.size());
  if (exponent >= -4 && exponent < 16) {
    if (point <= 0) return absl::StrCat(sign, "0.", std::string(static_cast<size_t>(-point), '0'), digits);
    if (point >= n) return absl::StrCat(sign, digits, std::string(static_cast<size_t>(point - n), '0'), ".0");
    return absl::StrCat(sign, digits.substr(0, static_cast<size_t>(point)), ".",
                        digits.substr(static_cast<size_t>(point)));
  }
  std::string mantissa = digits.substr(0, 1);
  if (n > 1) absl::StrAppend(&mantissa, ".", digits.substr(1));
  return absl::StrFormat("%s%se%c%02d", sign, mantissa, exponent < 0 ? '-' : '+', std::abs(exponent));
}

std::string StringRepr(absl::string_view s) {
  const bool has_single = s.find('\'') != absl::string_view::npos;
  const bool has_double = s.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t pos = 0; pos < s.size();) {
    const internal::Utf8Char c = internal::NextUtf8Char(s, pos);
    if (!c.valid) {
      for (int i = 0; i < c.length; ++i) absl::StrAppendFormat(&out, "\\x%02x", static_cast<unsigned char>(s[pos + i]));
    } else if (c.code_point == static_cast<uint32_t>(quote) || c.code_point == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c.code_point));
    } else if (c.code_point == '\t') {
      out += "\\t";
    } else if (c.code_point == '\n') {
      out += "\\n";
    } else if (c.code_point == '\r') {
      out += "\\r";
    } else if (c.code_point < 0x20 || c.code_point == 0x7F || (c.code_point >= 0x80 && !IsPrintable(c.code_point))) {
      if (c.code_point < 0x100) {
        absl::StrAppendFormat(&out, "\\x%02x", c.code_point);
      } else if (c.code_point < 0x10000) {
        absl::StrAppendFormat(&out, "\\u%04x", c.code_point);
      } else {
        absl::StrAppendFormat(&out, "\\U%08x", c.code_point);
      }
    } else {
      out.append(s.data() + pos, static_cast<size_t>(c.length));
    }
    pos += static_cast<size_t>(c.length);
  }
  out.push_back(quote);
  return out;
}

namespace {

absl::Status TooLong(size_t max_bytes) {
  return absl::InvalidArgumentError(absl::StrCat("the text of a value exceeds the limit of ", max_bytes, " bytes"));
}

absl::Status AppendRepr(const Value& value, bool quote_strings, size_t max_bytes, std::string* out) {
  if (out->size() > max_bytes) return TooLong(max_bytes);
  switch (value.kind()) {
    case Value::Kind::kUndefined:
      if (!quote_strings) return absl::OkStatus();
      out->append("Undefined");
      return absl::OkStatus();
    case Value::Kind::kNone:
      out->append("None");
      return absl::OkStatus();
    case Value::Kind::kBool:
      out->append(value.bool_value() ? "True" : "False");
      return absl::OkStatus();
    case Value::Kind::kInt:
      absl::StrAppend(out, value.int_value());
      return absl::OkStatus();
    case Value::Kind::kFloat:
      out->append(FloatRepr(value.float_value()));
      return absl::OkStatus();
    case Value::Kind::kString:
      if (quote_strings) {
        out->append(StringRepr(value.string_value()));
      } else {
        out->append(value.string_value());
      }
      return absl::OkStatus();
    case Value::Kind::kList: {
      const ListData& list = value.list();
      if (list.kind == Value::ListKind::kView) {
        return absl::InvalidArgumentError(
            "printing a one-pass sequence (the result of map, select, items, reverse ...) is not supported; "
            "convert it with |list or |join");
      }
      const bool tuple = list.kind == Value::ListKind::kTuple;
      out->push_back(tuple ? '(' : '[');
      for (size_t i = 0; i < list.items.size(); ++i) {
        if (i > 0) out->append(", ");
        RETURN_IF_ERROR(AppendRepr(list.items[i], true, max_bytes, out));
      }
      if (tuple && list.items.size() == 1) out->push_back(',');
      out->push_back(tuple ? ')' : ']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      out->push_back('{');
      bool first = true;
      for (const auto& [key, item] : value.dict().items) {
        if (!first) out->append(", ");
        first = false;
        out->append(StringRepr(key));
        out->append(": ");
        RETURN_IF_ERROR(AppendRepr(item, true, max_bytes, out));
      }
      out->push_back('}');
      return absl::OkStatus();
    }
    case Value::Kind::kNamespace: {
      out->append("<Namespace {");
      bool first = true;
      for (const auto& [key, item] : value.ns().attrs) {
        if (!first) out->append(", ");
        first = false;
        out->append(StringRepr(key));
        out->append(": ");
        if (item.kind() == Value::Kind::kNamespace)
          return absl::InvalidArgumentError("printing a namespace that holds a namespace is not supported");
        RETURN_IF_ERROR(AppendRepr(item, true, max_bytes, out));
      }
      out->append("}>");
      return absl::OkStatus();
    }
    case Value::Kind::kFunction:
      return absl::InvalidArgumentError(
          absl::StrCat("printing the function '", value.function().name, "' is not supported"));
  }
  return absl::OkStatus();
}

void AppendJsonString(absl::string_view s, bool ensure_ascii, std::string* out) {
  out->push_back('"');
  for (size_t pos = 0; pos < s.size();) {
    const internal::Utf8Char c = internal::NextUtf8Char(s, pos);
    const size_t length = static_cast<size_t>(c.length);
    if (!c.valid) {
      out->append(s.data() + pos, length);
    } else if (c.code_point == '"') {
      out->append("\\\"");
    } else if (c.code_point == '\\') {
      out->append("\\\\");
    } else if (c.code_point == '\n') {
      out->append("\\n");
    } else if (c.code_point == '\r') {
      out->append("\\r");
    } else if (c.code_point == '\t') {
      out->append("\\t");
    } else if (c.code_point == '\b') {
      out->append("\\b");
    } else if (c.code_point == '\f') {
      out->append("\\f");
    } else if (c.code_point < 0x20 || (ensure_ascii && c.code_point >= 0x7F)) {
      if (c.code_point < 0x10000) {
        absl::StrAppendFormat(out, "\\u%04x", c.code_point);
      } else {
        const uint32_t v = c.code_point - 0x10000;
        absl::StrAppendFormat(out, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
      }
    } else {
      out->append(s.data() + pos, length);
    }
    pos += length;
  }
  out->push_back('"');
}

}  // namespace

absl::StatusOr<std::string> ToStr(const Value& value, size_t max_bytes) {
  std::string out;
  RETURN_IF_ERROR(AppendRepr(value, false, max_bytes, &out));
  if (out.size() > max_bytes) return TooLong(max_bytes);
  return out;
}

absl::StatusOr<std::string> Repr(const Value& value, size_t max_bytes) {
  std::string out;
  RETURN_IF_ERROR(AppendRepr(value, true, max_bytes, &out));
  if (out.size() > max_bytes) return TooLong(max_bytes);
  return out;
}

absl::Status AppendJson(const Value& value, const JsonOptions& options, int level, size_t max_bytes, std::string* out) {
  if (out->size() > max_bytes) return TooLong(max_bytes);
  const auto newline = [&](int at_level) {
    if (options.indent < 0) return;
    out->push_back('\n');
    out->append(static_cast<size_t>(options.indent) * static_cast<size_t>(at_level), ' ');
  };
  const std::string item_separator = options.item_separator.value_or(options.indent < 0 ? ", " : ",");
  const std::string key_separator = options.key_separator.value_or(": ");
  switch (value.kind()) {
    case Value::Kind::kNone:
      out->append("null");
      return absl::OkStatus();
    case Value::Kind::kBool:
      out->append(value.bool_value() ? "true" : "false");
      return absl::OkStatus();
    case Value::Kind::kInt:
      absl::StrAppend(out, value.int_value());
      return absl::OkStatus();
    case Value::Kind::kFloat: {
      const double f = value.float_value();
      out->append(std::isnan(f) ? "NaN" : std::isinf(f) ? (f > 0 ? "Infinity" : "-Infinity") : FloatRepr(f));
      return absl::OkStatus();
    }
    case Value::Kind::kString:
      AppendJsonString(value.string_value(), options.ensure_ascii, out);
      return absl::OkStatus();
    case Value::Kind::kList: {
      const std::vector<Value>& items = value.list().items;
      if (items.empty()) {
        out->append("[]");
        return absl::OkStatus();
      }
      out->push_back('[');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(item_separator);
        newline(level + 1);
        RETURN_IF_ERROR(AppendJson(items[i], options, level + 1, max_bytes, out));
      }
      newline(level);
      out->push_back(']');
      return absl::OkStatus();
    }
    case Value::Kind::kDict: {
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& item : value.dict().items) items.push_back(&item);
      if (options.sort_keys) {
        std::stable_sort(items.begin(), items.end(), [](const auto* a, const auto* b) { return a->first < b->first; });
      }
      if (items.empty()) {
        out->append("{}");
        return absl::OkStatus();
      }
      out->push_back('{');
      for (size_t i = 0; i < items.size(); ++i) {
        if (i > 0) out->append(item_separator);
        newline(level + 1);
        AppendJsonString(items[i]->first, options.ensure_ascii, out);
        out->append(key_separator);
        RETURN_IF_ERROR(AppendJson(items[i]->second, options, level + 1, max_bytes, out));
      }
      newline(level);
      out->push_back('}');
      return absl::OkStatus();
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("tojson: an object of type ", value.TypeName(), " is not JSON serializable"));
  }
}

// ---- Comparisons ----

namespace {

bool IsNumber(const Value& v) {
  return v.kind() == Value::Kind::kBool || v.kind() == Value::Kind::kInt || v.kind() == Value::Kind::kFloat;
}

}  // namespace

std::optional<double> AsDouble(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::kBool:
      return v.bool_value() ? 1.0 : 0.0;
    case Value::Kind::kInt:
      return static_cast<double>(v.int_value());
    case Value::Kind::kFloat:
      return v.float_value();
    default:
      return std::nullopt;
  }
}

std::optional<int64_t> AsInt(const Value& v) {
  if (v.kind() == Value::Kind::kBool) return v.bool_value() ? 1 : 0;
  if (v.kind() == Value::Kind::kInt) return v.int_value();
  return std::nullopt;
}

namespace {

absl::Status Spend(Budget* budget, int64_t units) {
  budget->remaining -= units;
  if (budget->remaining < 0) return absl::InvalidArgumentError("a comparison took more work than the render's limit");
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<bool> Equal(const Value& a, const Value& b, Budget* budget) {
  RETURN_IF_ERROR(Spend(budget, 1));
  if (IsNumber(a) && IsNumber(b)) {
    const std::optional<int64_t> ai = AsInt(a), bi = AsInt(b);
    if (ai.has_value() && bi.has_value()) return *ai == *bi;
    return *AsDouble(a) == *AsDouble(b);
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kString:
      RETURN_IF_ERROR(
          Spend(budget, static_cast<int64_t>(std::min(a.string_value().size(), b.string_value().size()) / 64)));
      return a.string_value() == b.string_value();
    case Value::Kind::kList: {
      const ListData& x = a.list();
      const ListData& y = b.list();
      if (x.kind != y.kind || x.kind == Value::ListKind::kView) return &x == &y;
      if (x.items.size() != y.items.size()) return false;
      for (size_t i = 0; i < x.items.size(); ++i) {
        ASSIGN_OR_RETURN(const bool equal, Equal(x.items[i], y.items[i], budget));
        if (!equal) return false;
      }
      return true;
    }
    case Value::Kind::kDict: {
      const DictData& x = a.dict();
      const DictData& y = b.dict();
      if (x.items.size() != y.items.size()) return false;
      for (const auto& [key, value] : x.items) {
        const Value* other = y.Find(key);
        if (other == nullptr) return false;
        ASSIGN_OR_RETURN(const bool equal, Equal(value, *other, budget));
        if (!equal) return false;
      }
      return true;
    }
    default:
      return a.SameAs(b);
  }
}

absl::StatusOr<int> Compare(const Value& a, const Value& b, Budget* budget) {
  RETURN_IF_ERROR(Spend(budget, 1));
  if (IsNumber(a) && IsNumber(b)) {
    const std::optional<int64_t> ai = AsInt(a), bi = AsInt(b);
    if (ai.has_value() && bi.has_value()) return *ai < *bi ? -1 : *ai > *bi ? 1 : 0;
    const double x = *AsDouble(a), y = *AsDouble(b);
    if (std::isnan(x) || std::isnan(y)) return absl::InvalidArgumentError("comparing NaN is not supported");
    return x < y ? -1 : x > y ? 1 : 0;
  }
  if (a.is_string() && b.is_string()) {
    RETURN_IF_ERROR(
        Spend(budget, static_cast<int64_t>(std::min(a.string_value().size(), b.string_value().size()) / 64)));
    const int c = a.string_value().compare(b.string_value());
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (a.is_list() && b.is_list() && a.list().kind == b.list().kind && a.list().kind != Value::ListKind::kView) {
    const std::vector<Value>& x = a.list().items;
    const std::vector<Value>& y = b.list().items;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
      ASSIGN_OR_RETURN(const bool equal, Equal(x[i], y[i], budget));
      if (equal) continue;
      return Compare(x[i], y[i], budget);
    }
    return x.size() < y.size() ? -1 : x.size() > y.size() ? 1 : 0;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'<' is not supported between instances of '", a.TypeName(), "' and '", b.TypeName(), "'"));
}

}  // namespace rlhf::tokenizer::jinja
