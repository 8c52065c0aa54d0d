// The Jinja subset of chat templates. Expected outputs of JinjaTemplate.RendersAsJinja2Does come from Jinja2 3.1.6
// rendering the same templates the way transformers does (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
// loop controls, its tojson, raise_exception and strftime_now at time 0).
#include "common/tokenizer/jinja.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace rlhf::tokenizer::jinja {
namespace {

using ::testing::HasSubstr;

Value FromJson(const nlohmann::ordered_json& j) {
  if (j.is_null()) return Value::MakeNone();
  if (j.is_boolean()) return Value::Bool(j.get<bool>());
  if (j.is_number_integer()) return Value::Int(j.get<int64_t>());
  if (j.is_number()) return Value::Float(j.get<double>());
  if (j.is_string()) return Value::String(j.get<std::string>());
  if (j.is_array()) {
    std::vector<Value> items;
    for (const auto& item : j) items.push_back(FromJson(item));
    return Value::List(std::move(items));
  }
  std::vector<std::pair<std::string, Value>> items;
  for (const auto& [key, item] : j.items()) items.emplace_back(key, FromJson(item));
  return Value::Dict(std::move(items));
}

absl::StatusOr<std::string> Render(const std::string& source, const std::string& variables_json = "{}",
                                   const Limits& limits = {}) {
  absl::StatusOr<std::unique_ptr<Template>> parsed = Template::Parse(source);
  if (!parsed.ok()) return parsed.status();
  std::vector<std::pair<std::string, Value>> variables;
  const nlohmann::ordered_json parsed_variables = nlohmann::ordered_json::parse(variables_json);
  for (const auto& [key, value] : parsed_variables.items()) {
    variables.emplace_back(key, FromJson(value));
  }
  return (*parsed)->Render(variables, limits, /*now_unix_seconds=*/0);
}

struct Case {
  const char* source;
  const char* variables;
  const char* expected;
};

TEST(JinjaTemplate, RendersAsJinja2Does) {
  const Case cases[] = {
      {"{{ 1 + 2 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 10 / 5 }}",
       R"json({})json", "3|3|-4|1|2|3.5|1024|2.0"},
      {"{{ 1.5 }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 0.00001 }}|{{ 1/3 }}|{{ 1e16 }}|{{ -0.0 }}", R"json({})json",
       "1.5|1e+20|0.0001|1e-05|0.3333333333333333|1e+16|-0.0"},
      {"{{ 'a' ~ 1 ~ none ~ true }}|{{ [1, 'a', none, true, 1.5] }}|{{ {'a': 1, 'b': [2]} }}|{{ (1,) }}|{{ (1, 2) "
       "}}|{{ () }}",
       R"json({})json", "a1NoneTrue|[1, 'a', None, True, 1.5]|{'a': 1, 'b': [2]}|(1,)|(1, 2)|()"},
      {"{{ \"it's\" }}|{{ ['it\\'s', 'say \"x\"'] }}|{{ ['\\n\\t\\x01', '\xC3\xA9"
       "', '\xE2\x80\x8B"
       "'] }}",
       R"json({})json",
       "it's|[\"it's\", 'say \"x\"']|['\\n\\t\\x01', '\xC3\xA9"
       "', '\\u200b']"},
      {"{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ "
       "loop.length }}{{ loop.previtem }}{{ loop.nextitem }},{% endfor %}",
       R"json({})json", "103TrueFalse32,212FalseFalse313,321FalseTrue32,"},
      {"{% for x in [] %}a{% else %}empty{% endfor %}{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% "
       "endfor %}",
       R"json({})json", "empty2242"},
      {"{% set ns = namespace(x=0) %}{% for i in range(5) %}{% set ns.x = ns.x + i %}{% set y = i %}{% endfor %}{{ "
       "ns.x }}|{{ y }}",
       R"json({})json", "10|"},
      {"{% set x = 1 %}{% for i in [1,2] %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", R"json({})json", "221"},
      {"{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% "
       "endfor %}",
       R"json({})json", "0134"},
      {"{{ 'Hello World'.lower() }}|{{ 'hello world'.upper() }}|{{ 'hello wORLD'.title() }}|{{ 'hELLO'.capitalize() "
       "}}|{{ 'a,b,,c'.split(',') }}|{{ '  a  b '.split() }}|{{ 'a b c'.split(None, 1) }}",
       R"json({})json", "hello world|HELLO WORLD|Hello World|Hello|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']"},
      {"{{ '  x  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  x'.lstrip() }}|{{ 'x  '.rstrip() }}|{{ 'aaa'.replace('a', "
       "'b', 2) }}|{{ 'abc'.find('c') }}|{{ 'abab'.count('ab') }}|{{ '-'.join(['a','b']) }}",
       R"json({})json", "x|a|x|x|bba|2|2|a-b"},
      {"{{ 'abc'.startswith('a') }}{{ 'abc'.endswith(('x', 'c')) }}{{ 'abcdef'[1:4] }}{{ 'abcdef'[::-1] }}{{ "
       "'abcdef'[-2:] }}{{ [1,2,3,4][::2] }}{{ [1,2,3][5] }}{{ 'h\xC3\xA9"
       "llo'[1] }}{{ 'h\xC3\xA9"
       "llo'[-4:] }}",
       R"json({})json",
       "TrueTruebcdfedcbaef[1, 3]\xC3\xA9"
       "\xC3\xA9"
       "llo"},
      {"{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ 'caf\xC3\xA9"
       " \"q\" \\n' | tojson }}|{{ [1, 2.5, none, true] | tojson }}|{{ {} | tojson }}",
       R"json({"d": {"a": [1, {"b": null}], "c": "x"}})json",
       "{\"a\": [1, {\"b\": null}], \"c\": \"x\"}|{\n  \"a\": [\n    1,\n    {\n      \"b\": null\n    }\n  ],\n  "
       "\"c\": \"x\"\n}|\"caf\xC3\xA9"
       " \\\"q\\\" \\n\"|[1, 2.5, null, true]|{}"},
      {"{{ x is defined }}{{ y is defined }}{{ none is none }}{{ 1 is number }}{{ 'a' is string }}{{ d is mapping }}{{ "
       "3 is odd }}{{ 4 is divisibleby 2 }}{{ 'a' is in 'abc' }}{{ false is false }}{{ 1 is eq 1 }}",
       R"json({"x": [1], "d": {}})json", "TrueFalseTrueTrueTrueTrueTrueTrueTrueTrueTrue"},
      {"{{ y | default('dflt') }}|{{ '' | default('e', true) }}|{{ 'abc' | reverse }}|{{ [1,2] | reverse | list }}|{{ "
       "'3' | int + 1 }}|{{ '2.5' | float }}|{{ -3 | abs }}|{{ 'a<b&\"' | e }}",
       R"json({})json", "dflt|e|cba|[2, 1]|4|2.5|3|a&lt;b&amp;&#34;"},
      {"{{ users | map(attribute='name') | join(', ') }}|{{ users | selectattr('admin') | map(attribute='name') | list "
       "}}|{{ [1,2,3,4] | select('odd') | list }}|{{ ['a','B'] | map('upper') | list }}",
       R"json({"users": [{"name": "x", "admin": true}, {"name": "y", "admin": false}]})json",
       "x, y|['x']|[1, 3]|['A', 'B']"},
      {"{{ 'l1\\nl2\\n\\nl4' | indent(2) }}|{{ 'l1\\nl2' | indent(2, true) }}|{{ 'foo bar-baz(qux' | title }}",
       R"json({})json", "l1\n  l2\n\n  l4|  l1\n  l2|Foo Bar-Baz(Qux"},
      {"{{ 1 < 2 < 3 }}{{ 3 > 2 > 2 }}{{ 'a' in ['a'] }}{{ 'z' not in 'abc' }}{{ 1 == 1.0 }}{{ true == 1 }}{{ 'x' if "
       "false }}|{{ [] or 'e' }}",
       R"json({})json", "TrueFalseTrueTrueTrueTrue|e"},
      {"  {% if true %}\n    x\n  {% endif %}\n  y\n{# comment #}\n  {%+ if true %}z{% endif %}\n{%- if true -%}\n  "
       "w\n{%- endif %}\n",
       R"json({})json", "    x\n  y\n  zw"},
      {"a  {%- if true %} b {% endif -%}  c\n{{- ' d ' -}}\n e {{ 'f' }}\n", R"json({})json", "a b c d e f"},
      {"{% set s %}block {{ 1 + 1 }}{% endset %}[{{ s }}]{% for a, b in [[1, 2], [3, 4]] %}{{ a }}{{ b }}{% endfor "
       "%}{% set p, q = 1, 2 %}{{ p }}{{ q }}",
       R"json({})json", "[block 2]123412"},
      {"{{ d.get('a') }}{{ d.get('z', 'dz') }}{{ d.get('z') }}{{ d.keys() | list }}{{ d['a'] }}{{ d.a }}{{ d.zz }}|{{ "
       "d.items() | list }}",
       R"json({"d": {"a": 1}})json", "1dzNone['a']11|[('a', 1)]"},
      {"{% for x in 'ab' %}{{ loop.cycle('o', 'e') }}{% endfor %}{{ range(1, 10, 3) | list }}{{ ns }}{% set ns = "
       "namespace(a=1, b='x') %}{{ ns }}",
       R"json({})json", "oe[1, 4, 7]<Namespace {'a': 1, 'b': 'x'}>"},
      {"{% generation %}gen {{ 1 }}{% endgeneration %}{{ strftime_now('%Y') }}", R"json({})json", "gen 11970"},
  };
  ::setenv("TZ", "UTC", 1);
  for (const Case& c : cases) {
    SCOPED_TRACE(c.source);
    absl::StatusOr<std::string> text = Render(c.source, c.variables);
    ASSERT_TRUE(text.ok()) << text.status();
    EXPECT_EQ(*text, c.expected);
  }
}

TEST(JinjaTemplate, RefusesUnsupportedConstructsWhenParsedNamingTheLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"a\n{% macro m() %}x{% endmacro %}", "line 2: the tag 'macro' is not supported"},
      {"{% include 'x' %}", "line 1: the tag 'include' is not supported"},
      {"{% raw %}{{ x }}{% endraw %}", "line 1: the tag 'raw' is not supported"},
      {"{{ x | wordwrap }}", "line 1: the filter 'wordwrap' is not supported"},
      {"{{ x is lower_case }}", "line 1: the test 'lower_case' is not supported"},
      {"{{ cycler(1) }}", "line 1: the function 'cycler' is not supported"},
      {"\n\n{{ 'a'.format(1) }}", "line 3: the method 'format()' is not supported"},
      {"{{ x[0](1) }}", "line 1: only calls of functions and methods by name are supported"},
      {"{% for x in y recursive %}{% endfor %}", "line 1: recursive for loops are not supported"},
      {"{% break %}", "line 1: 'break' outside a for loop"},
      {"{% if x %}", "line 1: unexpected end of template, expected 'elif'"},
      {"{{ x ", "line 1: unexpected end of template, expected the end of the print statement"},
      {"{# x", "line 1: missing end of comment tag"},
      {"{{ 'abc }}", "line 1: a string literal is not closed"},
      {"{{ 'abc\\", "line 1: a string literal is not closed"},
      {"{{ 0x1F }}", "the number \"0x\" is not supported"},
      {"{{ f(*args) }}", "line 1: the function 'f' is not supported"},
      {"{{ namespace(*args) }}", "*args and **kwargs in calls are not supported"},
      {"{% endfor %}", "line 1: unknown or misplaced tag 'endfor'"},
      {"{{ a ) }}", "line 1: unexpected ')'"},
  };
  for (const auto& [source, message] : cases) {
    const absl::Status status = Template::Parse(source).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << source;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message)) << source;
  }
}

TEST(JinjaTemplate, FailsRenderingWhatItCannotDoExactlyNamingTheLine) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{{ raise_exception('roles must alternate') }}", "line 1: the template raised an error: roles must alternate"},
      {"\n{{ x.y }}", "line 2: 'x' is undefined"},
      {"{{ 1 + 'a' }}", "unsupported operand types for +: 'int' and 'str'"},
      {"{{ '%s' % 1 }}", "string formatting with % is not supported"},
      {"{{ 10 ** 20 }}", "integer overflow"},
      {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
      {"{{ 1 // 0 }}", "integer division by zero"},
      {"{{ '\xC3\xA9' | upper }}", "the filter upper of a non-ASCII letter (U+00E9) is not supported"},
      {"{{ 'caf\xC3\xA9'.title() }}", "title() of a non-ASCII letter (U+00E9) is not supported"},
      {"{{ {'a': 1}.items() }}", "printing a one-pass sequence"},
      {"{{ range(200000) | length }}", "range() of more than 100000 items"},
      {"{{ x | int }}", "'x' is undefined"},
      {"{% set ns = namespace() %}{% set ns.me = [ns] %}", "storing a namespace inside the namespace 'ns'"},
      {"{% set x = 1 %}{% set x.a = 2 %}", "cannot assign the attribute 'a' of 'x', a int"},
      {"{% for a, b in [[1, 2, 3]] %}{% endfor %}", "cannot unpack 3 values into 2 names"},
      {"{{ [1] < 'a' }}", "'<' is not supported between instances of 'list' and 'str'"},
  };
  for (const auto& [source, message] : cases) {
    const absl::StatusOr<std::string> text = Render(source);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << source;
    EXPECT_THAT(std::string(text.status().message()), HasSubstr(message)) << source;
  }
}

TEST(JinjaTemplate, KeepsInvalidUtf8AndControlBytesOfVariablesExact) {
  const std::string content("a\xFF\x00\xC3 b", 6);
  absl::StatusOr<std::unique_ptr<Template>> parsed =
      Template::Parse("[{{ c }}][{{ c | length }}][{{ c | trim }}][{{ c[1] == c[1:2] }}]");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  absl::StatusOr<std::string> text = (*parsed)->Render({{"c", Value::String(content)}});
  ASSERT_TRUE(text.ok()) << text.status();
  // Each byte outside well-formed UTF-8 counts as one character.
  EXPECT_EQ(*text, "[" + content + "][6][" + content + "][True]");
}

TEST(JinjaTemplate, RefusesDeepNestingWhenParsed) {
  const std::vector<std::string> sources = {
      "{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}",
      "{{ " + std::string(5000, '[') + std::string(5000, ']') + " }}",
      [] {
        std::string s;
        for (int i = 0; i < 3000; ++i) s += "{% if true %}";
        s += "x";
        for (int i = 0; i < 3000; ++i) s += "{% endif %}";
        return s;
      }(),
      [] {
        std::string s = "{{ ";
        for (int i = 0; i < 5000; ++i) s += "not ";
        return s + "1 }}";
      }(),
      [] {
        std::string s = "{{ 1";
        for (int i = 0; i < 100000; ++i) s += " + 1";  // a left-deep chain, not parsed recursively
        return s + " }}";
      }(),
      [] {
        std::string s = "{{ x";
        for (int i = 0; i < 100000; ++i) s += "|trim";
        return s + " }}";
      }(),
  };
  for (const std::string& source : sources) {
    const absl::Status status = Template::Parse(source).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << source.substr(0, 40);
    EXPECT_THAT(std::string(status.message()), HasSubstr("nested deeper than")) << source.substr(0, 40);
  }
}

TEST(JinjaTemplate, BoundsRenderingOfHostileTemplates) {
  Limits limits;
  limits.max_steps = 1'000'000;
  limits.max_output_bytes = 1 << 20;
  limits.max_allocated_bytes = 16 << 20;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}", "steps (the limit)"},
      {"{% for i in range(100000) %}{{ 'abcdefgh' * 100 }}{% endfor %}",
       "the output exceeds the limit of 1048576 bytes"},
      {"{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
       "exceeds the limit of 1048576"},
      {"{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = ns.l + [i, i] %}{% endfor %}",
       "bytes of values (the limit)"},
      {"{% set ns = namespace(l=1) %}{% for i in range(100) %}{% set ns.l = [ns.l] %}{% endfor %}",
       "values nested deeper than 64"},
      {"{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c = [b] * 1000 %}{{ c == c }}", "more work than"},
      {"{% set a = [1] * 1000 %}{% set b = [a] * 1000 %}{% set c = [b] * 1000 %}{{ c }}", "exceeds the limit"},
      {"{{ 'x' * 100000000 }}", "exceeds the limit of 1048576 bytes"},
      {"{% set s = 'x' * 1000000 %}{% for i in range(100000) %}{{ s[5] }}{% endfor %}", "steps (the limit)"},
      {"{% set s = 'x' * 1000000 %}{% for c in s %}{% endfor %}", "steps (the limit)"},
  };
  for (const auto& [source, message] : cases) {
    const absl::StatusOr<std::string> text = Render(source, "{}", limits);
    EXPECT_EQ(text.status().code(), absl::StatusCode::kInvalidArgument) << source;
    EXPECT_THAT(std::string(text.status().message()), HasSubstr(message)) << source;
  }
}

}  // namespace
}  // namespace rlhf::tokenizer::jinja
