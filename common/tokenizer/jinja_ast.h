// The syntax tree of a parsed Jinja template (jinja.h). Internal to common/tokenizer.
#ifndef RLHF_COMMON_TOKENIZER_JINJA_AST_H_
#define RLHF_COMMON_TOKENIZER_JINJA_AST_H_

#include <memory>
#include <string>
#include <vector>

#include "common/tokenizer/jinja.h"

namespace rlhf::tokenizer::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class ExprKind {
  kConst,    // value
  kName,     // name
  kGetAttr,  // args[0].name
  kGetItem,  // args[0][args[1]]
  kSlice,    // args[0][args[1]:args[2]:args[3]] (null args for omitted bounds)
  kCall,     // args[0](args[1..], kwargs)
  kFilter,   // args[0] | name(args[1..], kwargs)
  kTest,     // args[0] is [not] name(args[1..], kwargs)
  kNot,      // not args[0]
  kNeg,      // -args[0]
  kPos,      // +args[0]
  kAnd,      // args[0] and args[1]
  kOr,       // args[0] or args[1]
  kBinary,   // args[0] op args[1], op in + - * / // % **
  kCompare,  // args[0] ops[0] args[1] ops[1] args[2] ..., ops in == != < <= > >= in notin
  kConcat,   // args[0] ~ args[1] ~ ...
  kCond,     // args[1] if args[0] else args[2] (args[2] null: undefined)
  kList,     // [args...]
  kTuple,    // (args...)
  kDict,     // {args[0]: args[1], args[2]: args[3], ...}
};

struct Expr {
  ExprKind kind = ExprKind::kConst;
  int line = 0;
  Value value;                                          // kConst
  std::string name;                                     // kName, kGetAttr, kFilter, kTest; the operator of kBinary
  std::vector<ExprPtr> args;                            // operands, see ExprKind
  std::vector<std::string> ops;                         // kCompare
  std::vector<std::pair<std::string, ExprPtr>> kwargs;  // kCall, kFilter, kTest
  bool negated = false;                                 // kTest with `is not`
  int depth = 1;                                        // of the subtree (a leaf is 1)
};

struct Stmt;

enum class StmtKind {
  kText,      // text
  kOutput,    // {{ expr }}
  kIf,        // branches (a null condition is the else branch)
  kFor,       // {% for targets in expr [if filter] %} body {% else %} else_body {% endfor %}
  kSet,       // {% set targets = expr %} or {% set targets[0].attr = expr %}
  kSetBlock,  // {% set targets[0] %} body {% endset %}
  kBreak,
  kContinue,
  kBlock,  // a body rendered as it is ({% generation %})
};

struct Branch {
  ExprPtr condition;  // null: else
  std::vector<Stmt> body;
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr filter;
  std::vector<std::string> targets;
  std::string attr;  // kSet of a namespace attribute: targets[0].attr
  std::vector<Branch> branches;
  std::vector<Stmt> body;
  std::vector<Stmt> else_body;
};

struct Ast {
  std::vector<Stmt> body;
};

// Parses a template into its syntax tree; see Template::Parse.
absl::StatusOr<std::unique_ptr<Ast>> ParseTemplate(absl::string_view source);

}  // namespace rlhf::tokenizer::jinja

#endif  // RLHF_COMMON_TOKENIZER_JINJA_AST_H_
