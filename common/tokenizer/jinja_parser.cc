// Lexer and parser of the Jinja subset (jinja.h), following Jinja2's lexer.py and parser.py with trim_blocks and
// lstrip_blocks on.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/tokenizer/jinja_ast.h"
#include "common/tokenizer/jinja_builtins.h"
#include "common/tokenizer/utf8.h"
#include "common/util/status_macros.h"

namespace rlhf::tokenizer::jinja {
namespace {

using internal::QuoteForMessage;

constexpr int kMaxNesting = 128;
// Operator chains (`a + b + c ...`) build deep trees without deep parsing; their depth is capped too.
constexpr int kMaxExprDepth = 256;

enum class Tok { kData, kVarBegin, kVarEnd, kBlockBegin, kBlockEnd, kName, kString, kInt, kFloat, kOp, kEof };

struct Token {
  Tok type;
  std::string text;  // data, name, operator, or the decoded string
  int line;
  int64_t int_value = 0;
  double float_value = 0;
};

std::string Describe(const Token& token) {
  switch (token.type) {
    case Tok::kData:
      return "template data";
    case Tok::kVarBegin:
      return "'{{'";
    case Tok::kVarEnd:
      return "end of print statement";
    case Tok::kBlockBegin:
      return "'{%'";
    case Tok::kBlockEnd:
      return "end of statement block";
    case Tok::kName:
    case Tok::kOp:
      return absl::StrCat("'", token.text, "'");
    case Tok::kString:
      return absl::StrCat("string ", QuoteForMessage(token.text, 40));
    case Tok::kInt:
    case Tok::kFloat:
      return "number";
    case Tok::kEof:
      return "end of template";
  }
  return "token";
}

// The length of the Python white space character at text[pos], or 0 (str.isspace: Unicode White_Space and
// U+001C..U+001F).
int PythonSpaceAt(absl::string_view text, size_t pos) {
  const internal::Utf8Char c = internal::NextUtf8Char(text, pos);
  if (c.valid && IsPythonSpace(c.code_point)) return c.length;
  return 0;
}

size_t SkipPythonSpace(absl::string_view text, size_t pos) {
  while (pos < text.size()) {
    const int n = PythonSpaceAt(text, pos);
    if (n == 0) break;
    pos += static_cast<size_t>(n);
  }
  return pos;
}

// text.rstrip() in Python.
absl::string_view RStripPython(absl::string_view text) {
  size_t end = text.size();
  // Walk from the start so that multi-byte characters are decoded correctly; keep the end of the last non-space.
  size_t last_non_space_end = 0;
  for (size_t pos = 0; pos < text.size();) {
    const int n = PythonSpaceAt(text, pos);
    if (n > 0) {
      pos += static_cast<size_t>(n);
    } else {
      pos += static_cast<size_t>(internal::NextUtf8Char(text, pos).length);
      last_non_space_end = pos;
    }
  }
  end = last_non_space_end;
  return text.substr(0, end);
}

bool AllPythonSpace(absl::string_view text) { return !text.empty() && SkipPythonSpace(text, 0) == text.size(); }

class Lexer {
 public:
  explicit Lexer(absl::string_view raw_source) {
    // Jinja2 reads \r\n and \r as \n and drops one trailing newline (keep_trailing_newline=False).
    source_ = absl::StrReplaceAll(raw_source, {{"\r\n", "\n"}});
    absl::StrReplaceAll({{"\r", "\n"}}, &source_);
    if (!source_.empty() && source_.back() == '\n') source_.pop_back();
  }

  absl::StatusOr<std::vector<Token>> Run() {
    const absl::string_view s = source_;
    size_t pos = 0;
    bool line_starting = true;
    while (pos < s.size()) {
      size_t tag = s.find('{', pos);
      while (tag != absl::string_view::npos &&
             (tag + 1 >= s.size() || (s[tag + 1] != '{' && s[tag + 1] != '%' && s[tag + 1] != '#'))) {
        tag = s.find('{', tag + 1);
      }
      if (tag == absl::string_view::npos) {
        Emit(Tok::kData, std::string(s.substr(pos)));
        break;
      }
      const char kind = s[tag + 1];
      const char sign = tag + 2 < s.size() && (s[tag + 2] == '-' || s[tag + 2] == '+') ? s[tag + 2] : 0;
      absl::string_view text = s.substr(pos, tag - pos);
      const int text_lines = CountNewlines(text);
      if (sign == '-') {
        text = RStripPython(text);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks, for blocks and comments
        const size_t line_start = text.rfind('\n') == absl::string_view::npos ? 0 : text.rfind('\n') + 1;
        if ((line_start > 0 || line_starting) && AllPythonSpace(text.substr(line_start))) {
          text = text.substr(0, line_start);
        }
      }
      if (!text.empty()) Emit(Tok::kData, std::string(text));
      line_ += text_lines;
      pos = tag + 2 + (sign != 0 ? 1 : 0);
      if (kind == '#') {
        const size_t end = s.find("#}", pos);
        if (end == absl::string_view::npos) return Error("missing end of comment tag");
        line_ += CountNewlines(s.substr(pos, end - pos));
        const char end_sign = end > pos && (s[end - 1] == '-' || s[end - 1] == '+') ? s[end - 1] : 0;
        pos = end + 2;
        pos = AfterTagEnd(s, pos, end_sign, /*is_block=*/true);
        line_starting = pos > 0 && s[pos - 1] == '\n';
        continue;
      }
      const bool is_block = kind == '%';
      Emit(is_block ? Tok::kBlockBegin : Tok::kVarBegin, "");
      absl::StatusOr<size_t> after = LexTag(s, pos, is_block);
      if (!after.ok()) return after.status();
      pos = *after;
      line_starting = pos > 0 && s[pos - 1] == '\n';
    }
    Emit(Tok::kEof, "");
    return std::move(tokens_);
  }

 private:
  static int CountNewlines(absl::string_view text) {
    int n = 0;
    for (const char c : text) n += c == '\n';
    return n;
  }

  // Where the text after a tag end at `pos` starts: `-` strips all white space, `+` nothing, and otherwise a block
  // (or comment) end takes one newline (trim_blocks).
  size_t AfterTagEnd(absl::string_view s, size_t pos, char end_sign, bool is_block) {
    if (end_sign == '-') {
      const size_t skipped = SkipPythonSpace(s, pos);
      line_ += CountNewlines(s.substr(pos, skipped - pos));
      return skipped;
    }
    if (end_sign != '+' && is_block && pos < s.size() && s[pos] == '\n') {
      ++line_;
      return pos + 1;
    }
    return pos;
  }

  void Emit(Tok type, std::string text) { tokens_.push_back(Token{type, std::move(text), line_}); }

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(absl::StrCat("line ", line_, ": ", message));
  }

  // Lexes the inside of a {{ }} or {% %} tag starting at `pos`; returns the position after its end.
  absl::StatusOr<size_t> LexTag(absl::string_view s, size_t pos, bool is_block) {
    std::vector<char> balance;
    while (true) {
      // White space.
      const size_t skipped = SkipPythonSpace(s, pos);
      line_ += CountNewlines(s.substr(pos, skipped - pos));
      pos = skipped;
      if (pos >= s.size())
        return Error(absl::StrCat("unexpected end of template, expected the end of the ",
                                  is_block ? "statement block" : "print statement"));
      if (balance.empty()) {
        const char* end = is_block ? "%}" : "}}";
        for (const char end_sign : {'-', '+', '\0'}) {
          if (end_sign == '+' && !is_block) continue;
          const std::string pattern = end_sign == '\0' ? std::string(end) : absl::StrCat(std::string(1, end_sign), end);
          if (s.substr(pos, pattern.size()) == pattern) {
            Emit(is_block ? Tok::kBlockEnd : Tok::kVarEnd, "");
            return AfterTagEnd(s, pos + pattern.size(), end_sign, is_block);
          }
        }
      }
      const char c = s[pos];
      if (absl::ascii_isdigit(c)) {
        RETURN_IF_ERROR(LexNumber(s, &pos));
        continue;
      }
      if (absl::ascii_isalpha(c) || c == '_') {
        size_t end = pos + 1;
        while (end < s.size() && (absl::ascii_isalnum(s[end]) || s[end] == '_')) ++end;
        Emit(Tok::kName, std::string(s.substr(pos, end - pos)));
        pos = end;
        continue;
      }
      if (c == '\'' || c == '"') {
        RETURN_IF_ERROR(LexString(s, &pos));
        continue;
      }
      static constexpr const char* kOperators[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/",
                                                   "*",  "%",  "~",  "[",  "]",  "(",  ")", "{", "}",
                                                   ">",  "<",  "=",  ".",  ":",  "|",  ",", ";"};
      bool matched = false;
      for (const char* op : kOperators) {
        const absl::string_view op_view(op);
        if (s.substr(pos, op_view.size()) != op_view) continue;
        if (op_view == "(" || op_view == "[" || op_view == "{") {
          balance.push_back(op_view == "(" ? ')' : op_view == "[" ? ']' : '}');
        } else if (op_view == ")" || op_view == "]" || op_view == "}") {
          if (balance.empty()) return Error(absl::StrCat("unexpected '", op_view, "'"));
          if (balance.back() != op_view[0]) {
            return Error(absl::StrCat("unexpected '", op_view, "', expected '", std::string(1, balance.back()), "'"));
          }
          balance.pop_back();
        }
        Emit(Tok::kOp, std::string(op_view));
        pos += op_view.size();
        matched = true;
        break;
      }
      if (!matched) {
        return Error(
            absl::StrCat("unexpected character ",
                         QuoteForMessage(s.substr(pos, static_cast<size_t>(internal::NextUtf8Char(s, pos).length)))));
      }
    }
  }

  absl::Status LexNumber(absl::string_view s, size_t* pos) {
    const auto digits = [&](size_t p) {  // end of (\d+_)*\d+ starting at p, or p
      size_t end = p;
      while (end < s.size() && absl::ascii_isdigit(s[end])) {
        ++end;
        if (end + 1 < s.size() && s[end] == '_' && absl::ascii_isdigit(s[end + 1])) ++end;
      }
      return end;
    };
    const size_t start = *pos;
    size_t end = digits(start);
    bool is_float = false;
    if (end + 1 < s.size() && s[end] == '.' && absl::ascii_isdigit(s[end + 1])) {
      end = digits(end + 1);
      is_float = true;
    }
    if (end < s.size() && (s[end] == 'e' || s[end] == 'E')) {
      size_t e = end + 1;
      if (e < s.size() && (s[e] == '+' || s[e] == '-')) ++e;
      if (e < s.size() && absl::ascii_isdigit(s[e])) {
        end = digits(e);
        is_float = true;
      }
    }
    if (end < s.size() && (absl::ascii_isalpha(s[end]) || s[end] == '_')) {
      return Error(absl::StrCat("the number ", QuoteForMessage(s.substr(start, end - start + 1)),
                                " is not supported (only decimal integers and floats are)"));
    }
    std::string text(s.substr(start, end - start));
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Token token{is_float ? Tok::kFloat : Tok::kInt, text, line_};
    if (is_float) {
      token.float_value = std::strtod(text.c_str(), nullptr);
    } else {
      errno = 0;
      char* parse_end = nullptr;
      const long long value = std::strtoll(text.c_str(), &parse_end, 10);
      if (errno == ERANGE) return Error(absl::StrCat("the integer ", text, " does not fit in 64 bits"));
      token.int_value = value;
    }
    tokens_.push_back(std::move(token));
    *pos = end;
    return absl::OkStatus();
  }

  // A string literal with Python's escapes (Jinja2 decodes them with "unicode-escape").
  absl::Status LexString(absl::string_view s, size_t* pos) {
    const char quote = s[*pos];
    const int start_line = line_;
    std::string out;
    size_t p = *pos + 1;
    const auto hex = [&](size_t from, int n, uint32_t* value) {
      if (from + static_cast<size_t>(n) > s.size()) return false;
      *value = 0;
      for (int i = 0; i < n; ++i) {
        const char h = s[from + static_cast<size_t>(i)];
        if (!absl::ascii_isxdigit(h)) return false;
        *value =
            *value * 16 + static_cast<uint32_t>(absl::ascii_isdigit(h) ? h - '0' : absl::ascii_tolower(h) - 'a' + 10);
      }
      return true;
    };
    while (true) {
      if (p >= s.size()) {
        line_ = start_line;
        return Error("a string literal is not closed");
      }
      const char c = s[p];
      if (c == quote) break;
      if (c == '\n') ++line_;
      if (c != '\\') {
        out.push_back(c);
        ++p;
        continue;
      }
      if (p + 1 >= s.size()) {  // a backslash ends the template
        line_ = start_line;
        return Error("a string literal is not closed");
      }
      const char e = s[p + 1];
      p += 2;
      uint32_t code = 0;
      switch (e) {
        case '\n':
          ++line_;
          break;  // line continuation
        case '\\':
          out.push_back('\\');
          break;
        case '\'':
          out.push_back('\'');
          break;
        case '"':
          out.push_back('"');
          break;
        case 'a':
          out.push_back('\a');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'v':
          out.push_back('\v');
          break;
        case 'x':
        case 'u':
        case 'U': {
          const int n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (!hex(p, n, &code) || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) {
            return Error(absl::StrCat("the escape \\", std::string(1, e), " in a string literal is malformed"));
          }
          internal::AppendUtf8(code, &out);
          p += static_cast<size_t>(n);
          break;
        }
        case 'N':
          return Error("the escape \\N{...} in a string literal is not supported");
        default:
          if (e >= '0' && e <= '7') {  // octal, up to three digits
            code = static_cast<uint32_t>(e - '0');
            for (int i = 0; i < 2 && p < s.size() && s[p] >= '0' && s[p] <= '7'; ++i, ++p) {
              code = code * 8 + static_cast<uint32_t>(s[p] - '0');
            }
            internal::AppendUtf8(code, &out);
          } else {
            // Python keeps an unknown escape as it is.
            out.push_back('\\');
            out.push_back(e);
          }
      }
    }
    tokens_.push_back(Token{Tok::kString, std::move(out), start_line});
    *pos = p + 1;
    return absl::OkStatus();
  }

  std::string source_;
  std::vector<Token> tokens_;
  int line_ = 1;
};

// Recursive descent over the tokens, as Jinja2's parser.py. The first error is kept in status_ and every parse
// function returns early (a null node) once it is set.
class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}

  absl::StatusOr<std::unique_ptr<Ast>> Run() {
    auto ast = std::make_unique<Ast>();
    std::string end;
    ast->body = Subparse({}, &end);
    if (!status_.ok()) return status_;
    return ast;
  }

 private:
  // ---- Token stream ----
  const Token& Current() const { return tokens_[pos_]; }
  const Token& Look() const { return tokens_[std::min(pos_ + 1, tokens_.size() - 1)]; }
  void Next() {
    if (pos_ + 1 < tokens_.size()) ++pos_;
  }
  bool IsOp(absl::string_view op) const { return Current().type == Tok::kOp && Current().text == op; }
  bool IsName(absl::string_view name) const { return Current().type == Tok::kName && Current().text == name; }
  bool SkipOp(absl::string_view op) {
    if (!IsOp(op)) return false;
    Next();
    return true;
  }
  bool SkipName(absl::string_view name) {
    if (!IsName(name)) return false;
    Next();
    return true;
  }
  bool ok() const { return status_.ok(); }

  void Fail(int line, absl::string_view message) {
    if (status_.ok()) status_ = absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", message));
  }
  void Unexpected(absl::string_view expected) {
    Fail(Current().line, absl::StrCat("unexpected ", Describe(Current()),
                                      expected.empty() ? "" : absl::StrCat(", expected ", expected)));
  }
  bool ExpectOp(absl::string_view op) {
    if (SkipOp(op)) return true;
    Unexpected(absl::StrCat("'", op, "'"));
    return false;
  }
  bool Expect(Tok type, absl::string_view what) {
    if (Current().type == type) {
      Next();
      return true;
    }
    Unexpected(what);
    return false;
  }

  // Counts nesting; refuses templates nested deeper than kMaxNesting.
  struct Nest {
    Parser& p;
    explicit Nest(Parser& parser) : p(parser) {
      if (++p.depth_ > kMaxNesting)
        p.Fail(p.Current().line, absl::StrCat("blocks or expressions nested deeper than ", kMaxNesting));
    }
    ~Nest() { --p.depth_; }
  };

  static Stmt MakeStmt(StmtKind kind, int line) {
    Stmt stmt;
    stmt.kind = kind;
    stmt.line = line;
    return stmt;
  }

  // Sets the depth of a node whose children are attached; refuses trees deeper than kMaxExprDepth (which would
  // make evaluating and destroying them recurse too deep).
  ExprPtr Done(ExprPtr node) {
    if (node == nullptr) return nullptr;
    int depth = 0;
    for (const ExprPtr& arg : node->args) {
      if (arg != nullptr) depth = std::max(depth, arg->depth);
    }
    for (const auto& [name, value] : node->kwargs) {
      if (value != nullptr) depth = std::max(depth, value->depth);
    }
    node->depth = depth + 1;
    if (node->depth > kMaxExprDepth) {
      Fail(node->line, absl::StrCat("an expression nested deeper than ", kMaxExprDepth));
      return nullptr;
    }
    return node;
  }

  static ExprPtr Make(ExprKind kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- Statements ----

  // Parses statements until a block starting with one of `end_names` (whose name is stored in *end, the rest of
  // that tag left to the caller) or the end of the template (only when end_names is empty).
  std::vector<Stmt> Subparse(const std::vector<std::string>& end_names, std::string* end) {
    Nest nest(*this);
    std::vector<Stmt> body;
    if (!ok()) return body;
    while (ok()) {
      const Token& token = Current();
      if (token.type == Tok::kEof) {
        if (!end_names.empty()) {
          Fail(token.line, absl::StrCat("unexpected end of template, expected '", end_names.front(), "'"));
        }
        return body;
      }
      if (token.type == Tok::kData) {
        Stmt stmt = MakeStmt(StmtKind::kText, token.line);
        stmt.text = token.text;
        body.push_back(std::move(stmt));
        Next();
        continue;
      }
      if (token.type == Tok::kVarBegin) {
        Next();
        Stmt stmt = MakeStmt(StmtKind::kOutput, token.line);
        stmt.expr = ParseTuple(false, true, {}, false);
        if (!ok()) return body;
        Expect(Tok::kVarEnd, "the end of the print statement '}}'");
        body.push_back(std::move(stmt));
        continue;
      }
      if (token.type != Tok::kBlockBegin) {
        Unexpected("");
        return body;
      }
      Next();
      if (Current().type != Tok::kName) {
        Unexpected("a statement name");
        return body;
      }
      const std::string name = Current().text;
      for (const std::string& end_name : end_names) {
        if (name == end_name) {
          *end = name;
          Next();
          return body;
        }
      }
      ParseStatement(&body);
    }
    return body;
  }

  void ExpectBlockEnd() { Expect(Tok::kBlockEnd, "the end of the statement block '%}'"); }

  void ParseStatement(std::vector<Stmt>* body) {
    const Token& token = Current();
    const std::string name = token.text;
    const int line = token.line;
    Next();
    if (name == "if") {
      Stmt stmt = MakeStmt(StmtKind::kIf, line);
      while (ok()) {
        Branch branch;
        branch.condition = ParseTuple(false, true, {}, false);
        ExpectBlockEnd();
        std::string end;
        branch.body = Subparse({"elif", "else", "endif"}, &end);
        stmt.branches.push_back(std::move(branch));
        if (!ok()) return;
        if (end == "elif") continue;
        if (end == "else") {
          ExpectBlockEnd();
          Branch else_branch;
          else_branch.body = Subparse({"endif"}, &end);
          stmt.branches.push_back(std::move(else_branch));
        }
        ExpectBlockEnd();
        break;
      }
      body->push_back(std::move(stmt));
      return;
    }
    if (name == "for") {
      Stmt stmt = MakeStmt(StmtKind::kFor, line);
      stmt.targets = ParseTargets(/*allow_namespace=*/false, &stmt.attr);
      if (!ok()) return;
      if (!SkipName("in")) {
        Unexpected("'in'");
        return;
      }
      stmt.expr = ParseTuple(false, /*with_condexpr=*/false, {"recursive"}, false);
      if (SkipName("if")) stmt.filter = ParseExpression(true);
      if (IsName("recursive")) {
        Fail(Current().line, "recursive for loops are not supported");
        return;
      }
      ExpectBlockEnd();
      ++loop_depth_;
      std::string end;
      stmt.body = Subparse({"endfor", "else"}, &end);
      --loop_depth_;
      if (!ok()) return;
      if (end == "else") {
        ExpectBlockEnd();
        stmt.else_body = Subparse({"endfor"}, &end);
      }
      ExpectBlockEnd();
      body->push_back(std::move(stmt));
      return;
    }
    if (name == "set") {
      Stmt stmt = MakeStmt(StmtKind::kSet, line);
      stmt.targets = ParseTargets(/*allow_namespace=*/true, &stmt.attr);
      if (!ok()) return;
      if (SkipOp("=")) {
        stmt.expr = ParseTuple(false, true, {}, false);
        ExpectBlockEnd();
        body->push_back(std::move(stmt));
        return;
      }
      if (IsOp("|")) {
        Fail(Current().line, "filtered set blocks ({% set x | filter %}) are not supported");
        return;
      }
      if (stmt.targets.size() != 1 || !stmt.attr.empty()) {
        Fail(line, "a set block assigns one name");
        return;
      }
      ExpectBlockEnd();
      stmt.kind = StmtKind::kSetBlock;
      std::string end;
      stmt.body = Subparse({"endset"}, &end);
      ExpectBlockEnd();
      body->push_back(std::move(stmt));
      return;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) {
        Fail(line, absl::StrCat("'", name, "' outside a for loop"));
        return;
      }
      ExpectBlockEnd();
      body->push_back(MakeStmt(name == "break" ? StmtKind::kBreak : StmtKind::kContinue, line));
      return;
    }
    if (name == "generation") {  // transformers' assistant-mask marker: renders its body
      ExpectBlockEnd();
      Stmt stmt = MakeStmt(StmtKind::kBlock, line);
      std::string end;
      stmt.body = Subparse({"endgeneration"}, &end);
      ExpectBlockEnd();
      body->push_back(std::move(stmt));
      return;
    }
    static const absl::flat_hash_set<std::string>* const kKnownTags =
        new absl::flat_hash_set<std::string>{"macro", "call", "filter",     "include", "import", "from",  "extends",
                                             "block", "with", "autoescape", "raw",     "do",     "print", "trans"};
    if (kKnownTags->contains(name)) {
      Fail(line, absl::StrCat("the tag '", name, "' is not supported"));
    } else {
      Fail(line, absl::StrCat("unknown or misplaced tag '", name, "'"));
    }
  }

  // Assignment targets: a name, names separated by commas, or (with allow_namespace) `ns.attr`.
  std::vector<std::string> ParseTargets(bool allow_namespace, std::string* attr) {
    std::vector<std::string> names;
    while (ok()) {
      if (Current().type != Tok::kName) {
        Unexpected("a name to assign to");
        break;
      }
      const Token& token = Current();
      if (token.text == "true" || token.text == "false" || token.text == "none" || token.text == "True" ||
          token.text == "False" || token.text == "None") {
        Fail(token.line, absl::StrCat("cannot assign to '", token.text, "'"));
        break;
      }
      names.push_back(token.text);
      Next();
      if (allow_namespace && names.size() == 1 && IsOp(".")) {
        Next();
        if (Current().type != Tok::kName) {
          Unexpected("an attribute name");
          break;
        }
        *attr = Current().text;
        Next();
        break;
      }
      if (!SkipOp(",")) break;
      if (IsName("in") || IsOp("=") || Current().type == Tok::kBlockEnd) break;  // trailing comma
    }
    return names;
  }

  // ---- Expressions ----

  bool IsTupleEnd(const std::vector<std::string>& extra_end) const {
    const Token& t = Current();
    if (t.type == Tok::kVarEnd || t.type == Tok::kBlockEnd || (t.type == Tok::kOp && t.text == ")")) return true;
    if (t.type == Tok::kName) {
      for (const std::string& name : extra_end) {
        if (t.text == name) return true;
      }
    }
    return false;
  }

  ExprPtr ParseTuple(bool simplified, bool with_condexpr, const std::vector<std::string>& extra_end,
                     bool explicit_parentheses) {
    const int line = Current().line;
    std::vector<ExprPtr> items;
    bool is_tuple = false;
    while (ok()) {
      if (!items.empty() && !ExpectOp(",")) return nullptr;
      if (IsTupleEnd(extra_end)) break;
      items.push_back(simplified ? ParsePrimary() : ParseExpression(with_condexpr));
      if (!ok()) return nullptr;
      if (IsOp(",")) {
        is_tuple = true;
      } else {
        break;
      }
    }
    if (!ok()) return nullptr;
    if (!is_tuple) {
      if (!items.empty()) return std::move(items.front());
      if (!explicit_parentheses) {
        Unexpected("an expression");
        return nullptr;
      }
    }
    ExprPtr tuple = Make(ExprKind::kTuple, line);
    tuple->args = std::move(items);
    return Done(std::move(tuple));
  }

  ExprPtr ParseExpression(bool with_condexpr) { return with_condexpr ? ParseCondExpr() : ParseOr(); }

  ExprPtr ParseCondExpr() {
    Nest nest(*this);
    if (!ok()) return nullptr;
    int line = Current().line;
    ExprPtr expr = ParseOr();
    while (ok() && SkipName("if")) {
      ExprPtr test = ParseOr();
      ExprPtr otherwise;
      if (SkipName("else")) otherwise = ParseCondExpr();
      if (!ok()) return nullptr;
      ExprPtr cond = Make(ExprKind::kCond, line);
      cond->args.push_back(std::move(test));
      cond->args.push_back(std::move(expr));
      cond->args.push_back(std::move(otherwise));
      expr = Done(std::move(cond));
      if (expr == nullptr) return nullptr;
      line = Current().line;
    }
    return ok() ? std::move(expr) : nullptr;
  }

  ExprPtr ParseBinaryChain(ExprKind kind, const char* keyword, ExprPtr (Parser::*next)()) {
    int line = Current().line;
    ExprPtr left = (this->*next)();
    while (ok() && SkipName(keyword)) {
      ExprPtr node = Make(kind, line);
      node->args.push_back(std::move(left));
      node->args.push_back((this->*next)());
      left = Done(std::move(node));
      if (left == nullptr) return nullptr;
      line = Current().line;
    }
    return ok() ? std::move(left) : nullptr;
  }
  ExprPtr ParseOr() { return ParseBinaryChain(ExprKind::kOr, "or", &Parser::ParseAnd); }
  ExprPtr ParseAnd() { return ParseBinaryChain(ExprKind::kAnd, "and", &Parser::ParseNot); }

  ExprPtr ParseNot() {
    Nest nest(*this);
    if (!ok()) return nullptr;
    if (IsName("not")) {
      const int line = Current().line;
      Next();
      ExprPtr node = Make(ExprKind::kNot, line);
      node->args.push_back(ParseNot());
      return ok() ? Done(std::move(node)) : nullptr;
    }
    return ParseCompare();
  }

  ExprPtr ParseCompare() {
    const int line = Current().line;
    ExprPtr expr = ParseMath1();
    std::vector<std::string> ops;
    std::vector<ExprPtr> operands;
    while (ok()) {
      const Token& t = Current();
      if (t.type == Tok::kOp &&
          (t.text == "==" || t.text == "!=" || t.text == "<" || t.text == "<=" || t.text == ">" || t.text == ">=")) {
        ops.push_back(t.text);
        Next();
      } else if (SkipName("in")) {
        ops.push_back("in");
      } else if (IsName("not") && Look().type == Tok::kName && Look().text == "in") {
        Next();
        Next();
        ops.push_back("notin");
      } else {
        break;
      }
      operands.push_back(ParseMath1());
    }
    if (!ok()) return nullptr;
    if (ops.empty()) return expr;
    ExprPtr node = Make(ExprKind::kCompare, line);
    node->args.push_back(std::move(expr));
    for (ExprPtr& operand : operands) node->args.push_back(std::move(operand));
    node->ops = std::move(ops);
    return Done(std::move(node));
  }

  ExprPtr Binary(const std::string& op, ExprPtr left, ExprPtr right, int line) {
    ExprPtr node = Make(ExprKind::kBinary, line);
    node->name = op;
    node->args.push_back(std::move(left));
    node->args.push_back(std::move(right));
    return Done(std::move(node));
  }

  ExprPtr ParseMath1() {
    int line = Current().line;
    ExprPtr left = ParseConcat();
    while (ok() && (IsOp("+") || IsOp("-"))) {
      const std::string op = Current().text;
      Next();
      left = Binary(op, std::move(left), ParseConcat(), line);
      line = Current().line;
    }
    return ok() ? std::move(left) : nullptr;
  }

  ExprPtr ParseConcat() {
    const int line = Current().line;
    std::vector<ExprPtr> args;
    args.push_back(ParseMath2());
    while (ok() && SkipOp("~")) args.push_back(ParseMath2());
    if (!ok()) return nullptr;
    if (args.size() == 1) return std::move(args.front());
    ExprPtr node = Make(ExprKind::kConcat, line);
    node->args = std::move(args);
    return Done(std::move(node));
  }

  ExprPtr ParseMath2() {
    int line = Current().line;
    ExprPtr left = ParsePow();
    while (ok() && (IsOp("*") || IsOp("/") || IsOp("//") || IsOp("%"))) {
      const std::string op = Current().text;
      Next();
      left = Binary(op, std::move(left), ParsePow(), line);
      line = Current().line;
    }
    return ok() ? std::move(left) : nullptr;
  }

  ExprPtr ParsePow() {
    int line = Current().line;
    ExprPtr left = ParseUnary(true);
    while (ok() && SkipOp("**")) {
      left = Binary("**", std::move(left), ParseUnary(true), line);
      line = Current().line;
    }
    return ok() ? std::move(left) : nullptr;
  }

  ExprPtr ParseUnary(bool with_filter) {
    Nest nest(*this);
    if (!ok()) return nullptr;
    const int line = Current().line;
    ExprPtr node;
    if (IsOp("-") || IsOp("+")) {
      const bool negative = IsOp("-");
      Next();
      node = Make(negative ? ExprKind::kNeg : ExprKind::kPos, line);
      node->args.push_back(ParseUnary(false));
      if (ok()) node = Done(std::move(node));
    } else {
      node = ParsePrimary();
    }
    if (!ok()) return nullptr;
    node = ParsePostfix(std::move(node));
    if (with_filter && ok()) node = ParseFilterExpr(std::move(node));
    return ok() ? std::move(node) : nullptr;
  }

  ExprPtr ParsePrimary() {
    Nest nest(*this);
    if (!ok()) return nullptr;
    const Token& token = Current();
    const int line = token.line;
    if (token.type == Tok::kName) {
      const std::string name = token.text;
      Next();
      ExprPtr node = Make(ExprKind::kConst, line);
      if (name == "true" || name == "True") {
        node->value = Value::Bool(true);
      } else if (name == "false" || name == "False") {
        node->value = Value::Bool(false);
      } else if (name == "none" || name == "None") {
        node->value = Value::MakeNone();
      } else {
        node->kind = ExprKind::kName;
        node->name = name;
      }
      return node;
    }
    if (token.type == Tok::kString) {
      std::string text;
      while (Current().type == Tok::kString) {  // adjacent literals concatenate
        text += Current().text;
        Next();
      }
      ExprPtr node = Make(ExprKind::kConst, line);
      node->value = Value::String(std::move(text));
      return node;
    }
    if (token.type == Tok::kInt || token.type == Tok::kFloat) {
      ExprPtr node = Make(ExprKind::kConst, line);
      node->value = token.type == Tok::kInt ? Value::Int(token.int_value) : Value::Float(token.float_value);
      Next();
      return node;
    }
    if (IsOp("(")) {
      Next();
      ExprPtr node = ParseTuple(false, true, {}, /*explicit_parentheses=*/true);
      if (!ok() || !ExpectOp(")")) return nullptr;
      return node;
    }
    if (IsOp("[")) {
      Next();
      ExprPtr node = Make(ExprKind::kList, line);
      while (ok() && !IsOp("]")) {
        if (!node->args.empty() && !ExpectOp(",")) return nullptr;
        if (IsOp("]")) break;
        node->args.push_back(ParseExpression(true));
      }
      if (!ok() || !ExpectOp("]")) return nullptr;
      return Done(std::move(node));
    }
    if (IsOp("{")) {
      Next();
      ExprPtr node = Make(ExprKind::kDict, line);
      while (ok() && !IsOp("}")) {
        if (!node->args.empty() && !ExpectOp(",")) return nullptr;
        if (IsOp("}")) break;
        node->args.push_back(ParseExpression(true));
        if (!ok() || !ExpectOp(":")) return nullptr;
        node->args.push_back(ParseExpression(true));
      }
      if (!ok() || !ExpectOp("}")) return nullptr;
      return Done(std::move(node));
    }
    Unexpected("");
    return nullptr;
  }

  ExprPtr ParsePostfix(ExprPtr node) {
    while (ok()) {
      if (IsOp(".") || IsOp("[")) {
        node = ParseSubscript(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        break;
      }
    }
    return ok() ? std::move(node) : nullptr;
  }

  ExprPtr ParseFilterExpr(ExprPtr node) {
    while (ok()) {
      if (IsOp("|")) {
        node = ParseFilter(std::move(node));
      } else if (IsName("is")) {
        node = ParseTest(std::move(node));
      } else if (IsOp("(")) {
        node = ParseCall(std::move(node));
      } else {
        break;
      }
    }
    return ok() ? std::move(node) : nullptr;
  }

  ExprPtr ParseSubscript(ExprPtr node) {
    const int line = Current().line;
    if (SkipOp(".")) {
      if (Current().type == Tok::kName) {
        ExprPtr attr = Make(ExprKind::kGetAttr, line);
        attr->name = Current().text;
        attr->args.push_back(std::move(node));
        Next();
        return Done(std::move(attr));
      }
      if (Current().type == Tok::kInt) {
        ExprPtr item = Make(ExprKind::kGetItem, line);
        item->args.push_back(std::move(node));
        ExprPtr index = Make(ExprKind::kConst, line);
        index->value = Value::Int(Current().int_value);
        item->args.push_back(std::move(index));
        Next();
        return Done(std::move(item));
      }
      Unexpected("a name or a number after '.'");
      return nullptr;
    }
    Next();  // '['
    std::vector<ExprPtr> args;
    while (ok() && !IsOp("]")) {
      if (!args.empty() && !ExpectOp(",")) return nullptr;
      args.push_back(ParseSubscribed());
    }
    if (!ok() || !ExpectOp("]")) return nullptr;
    if (args.size() != 1) {
      Fail(line, "subscripts with several indices are not supported");
      return nullptr;
    }
    ExprPtr arg = std::move(args.front());
    if (arg->kind == ExprKind::kSlice) {  // ParseSubscribed's slice holds [null, start, stop, step]
      arg->args[0] = std::move(node);
      return Done(std::move(arg));
    }
    ExprPtr item = Make(ExprKind::kGetItem, line);
    item->args.push_back(std::move(node));
    item->args.push_back(std::move(arg));
    return Done(std::move(item));
  }

  // One subscript: an expression, or a slice [start]:[stop][:[step]] returned as kSlice with args[0] left null.
  ExprPtr ParseSubscribed() {
    const int line = Current().line;
    ExprPtr start;
    if (!IsOp(":")) {
      start = ParseExpression(true);
      if (!ok() || !IsOp(":")) return start;
    }
    Next();  // ':'
    ExprPtr slice = Make(ExprKind::kSlice, line);
    slice->args.resize(4);
    slice->args[1] = std::move(start);
    if (!IsOp(":") && !IsOp("]") && !IsOp(",")) slice->args[2] = ParseExpression(true);
    if (ok() && SkipOp(":")) {
      if (!IsOp("]") && !IsOp(",")) slice->args[3] = ParseExpression(true);
    }
    return ok() ? std::move(slice) : nullptr;
  }

  // (args, kwargs) into node->args (after what is there) and node->kwargs.
  void ParseCallArgs(Expr* node) {
    const int line = Current().line;
    if (!ExpectOp("(")) return;
    bool require_comma = false;
    while (ok() && !IsOp(")")) {
      if (require_comma) {
        if (!ExpectOp(",")) return;
        if (IsOp(")")) break;
      }
      if (IsOp("*") || IsOp("**")) {
        Fail(line, "*args and **kwargs in calls are not supported");
        return;
      }
      if (Current().type == Tok::kName && Look().type == Tok::kOp && Look().text == "=") {
        std::string key = Current().text;
        Next();
        Next();
        node->kwargs.emplace_back(std::move(key), ParseExpression(true));
      } else {
        if (!node->kwargs.empty()) {
          Fail(line, "a positional argument after a keyword argument");
          return;
        }
        node->args.push_back(ParseExpression(true));
      }
      require_comma = true;
    }
    ExpectOp(")");
  }

  ExprPtr ParseCall(ExprPtr callee) {
    const int line = Current().line;
    // Only built-in functions and methods can be called; check the name now so that an unsupported one is refused
    // when the template is loaded.
    if (callee->kind == ExprKind::kName) {
      if (!IsGlobalFunction(callee->name)) {
        Fail(line, absl::StrCat("the function '", callee->name, "' is not supported"));
        return nullptr;
      }
    } else if (callee->kind == ExprKind::kGetAttr) {
      if (!IsMethodName(callee->name)) {
        Fail(line, absl::StrCat("the method '", callee->name, "()' is not supported"));
        return nullptr;
      }
    } else {
      Fail(line, "only calls of functions and methods by name are supported");
      return nullptr;
    }
    ExprPtr call = Make(ExprKind::kCall, line);
    call->args.push_back(std::move(callee));
    ParseCallArgs(call.get());
    return ok() ? Done(std::move(call)) : nullptr;
  }

  ExprPtr ParseFilter(ExprPtr node) {
    while (ok() && SkipOp("|")) {
      const int line = Current().line;
      if (Current().type != Tok::kName) {
        Unexpected("a filter name");
        return nullptr;
      }
      std::string name = Current().text;
      Next();
      if (IsOp(".")) {
        Fail(line, "dotted filter names are not supported");
        return nullptr;
      }
      if (!IsFilterName(name)) {
        Fail(line, absl::StrCat("the filter '", name, "' is not supported"));
        return nullptr;
      }
      ExprPtr filter = Make(ExprKind::kFilter, line);
      filter->name = std::move(name);
      filter->args.push_back(std::move(node));
      if (IsOp("(")) ParseCallArgs(filter.get());
      if (!ok()) return nullptr;
      node = Done(std::move(filter));
    }
    return ok() ? std::move(node) : nullptr;
  }

  ExprPtr ParseTest(ExprPtr node) {
    const int line = Current().line;
    Next();  // 'is'
    const bool negated = SkipName("not");
    if (Current().type != Tok::kName) {
      Unexpected("a test name");
      return nullptr;
    }
    std::string name = Current().text;
    Next();
    if (IsOp(".")) {
      Fail(line, "dotted test names are not supported");
      return nullptr;
    }
    if (!IsTestName(name)) {
      Fail(line, absl::StrCat("the test '", name, "' is not supported"));
      return nullptr;
    }
    ExprPtr test = Make(ExprKind::kTest, line);
    test->name = std::move(name);
    test->negated = negated;
    test->args.push_back(std::move(node));
    const Token& t = Current();
    if (IsOp("(")) {
      ParseCallArgs(test.get());
    } else if ((t.type == Tok::kName || t.type == Tok::kString || t.type == Tok::kInt || t.type == Tok::kFloat ||
                IsOp("[") || IsOp("{")) &&
               !(t.type == Tok::kName && (t.text == "else" || t.text == "or" || t.text == "and"))) {
      if (IsName("is")) {
        Fail(t.line, "tests cannot be chained with 'is'");
        return nullptr;
      }
      ExprPtr arg = ParsePrimary();
      if (ok()) test->args.push_back(ParsePostfix(std::move(arg)));
    }
    return ok() ? Done(std::move(test)) : nullptr;
  }

  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
  absl::Status status_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Ast>> ParseTemplate(absl::string_view source) {
  Lexer lexer(source);
  absl::StatusOr<std::vector<Token>> tokens = lexer.Run();
  if (!tokens.ok()) return tokens.status();
  Parser parser(*std::move(tokens));
  return parser.Run();
}

}  // namespace rlhf::tokenizer::jinja
