// The chat-template interpreter, one language feature at a time. Expected strings are what
// @huggingface/jinja 0.5.13 renders for the same template and context (the oracle), except for
// the Jinja2 filters it lacks (count, round, escape).
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "runtime/serve/jinja.h"

namespace weft::serve::jinja {
namespace {

using nlohmann::ordered_json;

std::string render(std::string_view source, const ordered_json& context = ordered_json::object()) {
  absl::StatusOr<Template> tmpl = Template::parse(source);
  if (!tmpl.ok()) return "PARSE ERROR: " + std::string(tmpl.status().message());
  absl::StatusOr<std::string> out = tmpl->render(context);
  if (!out.ok()) return "RENDER ERROR: " + std::string(out.status().message());
  return *out;
}

TEST(Jinja, PrintsValuesAsHuggingFaceJinja) {
  EXPECT_EQ(render("{{ 1 }}|{{ 1.0 }}|{{ 2.50 }}|{{ true }}|{{ none }}|{{ undefined_name }}|"
                   "{{ [1, 'a', none] }}|{{ {'k': [true]} }}"),
            R"(1|1.0|2.5|true|||[1, "a", null]|{"k": [true]})");
  // JSON numbers that are integral print as integers, as they do once JSON.parse'd.
  EXPECT_EQ(render("{{ x }} {{ y }}", ordered_json{{"x", 3.0}, {"y", 0.5}}), "3 0.5");
}

TEST(Jinja, WhitespaceControlAndDefaultBlockTrimming) {
  EXPECT_EQ(render("a  {{- 'b' -}}  c {#- note -#} d"), "abcd");
  // lstrip_blocks and trim_blocks are on, and one final newline is dropped.
  EXPECT_EQ(render("x\n  {% if true %}\ny\n  {% endif %}\nz\n"), "x\ny\nz");
}

TEST(Jinja, ForLoopVariablesElseFilterAndUnpacking) {
  EXPECT_EQ(render("{% for m in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}"
                   "{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
                   ordered_json{{"items", {"a", "b"}}}),
            "102truefalse2;211falsetrue2;");
  EXPECT_EQ(render("{% for m in items %}{{ m }}{% else %}empty{% endfor %}",
                   ordered_json{{"items", ordered_json::array()}}),
            "empty");
  EXPECT_EQ(render("{% for x in items if x > 1 %}{{ x }}{% endfor %}",
                   ordered_json{{"items", {1, 2, 3}}}),
            "23");
  EXPECT_EQ(render("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}",
                   ordered_json{{"d", {{"b", 1}, {"a", 2}}}}),
            "b=1,a=2,");
  EXPECT_EQ(render("{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}"
                   "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"),
            "023");
}

TEST(Jinja, IfElifElse) {
  const char* src = "{% if x == 1 %}one{% elif x == 2 %}two{% else %}other{% endif %}";
  EXPECT_EQ(render(src, ordered_json{{"x", 1}}), "one");
  EXPECT_EQ(render(src, ordered_json{{"x", 2}}), "two");
  EXPECT_EQ(render(src, ordered_json{{"x", 3}}), "other");
}

TEST(Jinja, SetBlockSetNamespaceAndLoopScope) {
  EXPECT_EQ(render("{% set x %}a{{ 1 + 1 }}{% endset %}{{ x }}|{% set ns = namespace(n=0) %}"
                   "{% for i in [1, 2] %}{% set ns.n = ns.n + i %}{% set local = i %}{% endfor %}"
                   "{{ ns.n }}{{ local is defined }}"),
            "a2|3false");
}

TEST(Jinja, MacrosWithDefaultsKeywordsAndCaller) {
  EXPECT_EQ(render("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
                   "{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}"),
            "Hi A! Hi B? Hi C.");
  EXPECT_EQ(
      render("{% macro box() %}[{{ caller() }}]{% endmacro %}{% call box() %}in{% endcall %}"),
      "[in]");
}

TEST(Jinja, SlicingSubscriptsAndMembership) {
  EXPECT_EQ(render("{{ 'abcdef'[::-1] }} {{ [1, 2, 3][1:] }} {{ 'abc'[0] }} {{ [1, 2, 3][-1] }} "
                   "{{ 'abcdef'[1:5:2] }}"),
            "fedcba [2, 3] a 3 bd");
  EXPECT_EQ(
      render("{{ 'a' in 'cat' }} {{ 'z' not in ['z'] }} {{ 'k' in {'k': 1} }} {{ 2 in [1, 2] }}"),
      "true false true true");
  EXPECT_EQ(render("{{ d['a'] }} {{ d.a }} {{ d.missing }}|", ordered_json{{"d", {{"a", 1}}}}),
            "1 1 |");
}

TEST(Jinja, Tests) {
  EXPECT_EQ(render("{{ x is defined }} {{ y is defined }} {{ n is none }} {{ 's' is string }} "
                   "{{ {} is mapping }} {{ [] is iterable }} {{ 3 is odd }} {{ 1.5 is integer }} "
                   "{{ x is not none }}",
                   ordered_json{{"x", 1}, {"n", nullptr}}),
            "true false true true true true true false true");
}

TEST(Jinja, OperatorsFollowJavaScriptNumbers) {
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ 2.0 ~ true ~ missing }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 / 2 }} "
                   "{{ 7 % 3 }} {{ 2 ** 3 }} {{ 0.1 + 0.2 }} {{ 3 * 1.0 }}"),
            "a12true 3 -4 3.5 1 8 0.30000000000000004 3.0");
  EXPECT_EQ(render("{{ 1 < 2 and 2 >= 2 }} {{ not 0 }} {{ 0 or 'x' }} {{ '' and 'y' }} "
                   "{{ 'yes' if c else 'no' }} {{ 'yes' if not c }}|",
                   ordered_json{{"c", false}}),
            "true true x  no yes|");
}

TEST(Jinja, ToJsonMatchesHuggingFaceSpacing) {
  ordered_json d = {{"a", {1, 2.5, nullptr}}, {"b", ordered_json::object()}, {"c", "x"}};
  EXPECT_EQ(render("{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ 'é\"\\n' | tojson }}",
                   ordered_json{{"d", d}}),
            "{\"a\": [1, 2.5, null], \"b\": {}, \"c\": \"x\"}|"
            "{\n  \"a\": [\n    1,\n    2.5,\n    null\n  ],\n  \"b\": {},\n  \"c\": \"x\"\n}|"
            "\"é\\\"\\n\"");
}

TEST(Jinja, StringFilters) {
  EXPECT_EQ(
      render("{{ '  t  ' | trim }}|{{ 'ab' | length }}|{{ 'aB' | upper }}{{ 'aB' | lower }}|"
             "{{ 'hi there' | title }}|{{ 'hi' | capitalize }}|{{ 'a-a' | replace('-', '+') }}"),
      "t|2|ABab|Hi There|Hi|a+a");
  EXPECT_EQ(render("{{ 42 | string }} {{ '12' | int + 1 }} {{ '1.5' | float }} {{ 2.7 | int }} "
                   "{{ 'x' | safe }} {{ 'a\nb\n\nc' | indent(2) }}"),
            "42 13 1.5 2 x a\n  b\n\n  c");
}

TEST(Jinja, ListAndDictFilters) {
  EXPECT_EQ(render("{{ ['a', 'b'] | join(', ') }}|{{ [3, 1, 2] | first }}{{ [3, 1, 2] | last }}|"
                   "{{ [3, 1, 2] | sort | list }}|{{ [1, 2] | reverse | list }}|"
                   "{{ [1, 1, 2] | unique | list }}|{{ {'b': 1, 'a': 2} | dictsort }}|"
                   "{{ {'a': 1} | items | list }}"),
            R"(a, b|32|[1, 2, 3]|[2, 1]|[1, 2]|[["a", 2], ["b", 1]]|[["a", 1]])");
  ordered_json u = {{{"n", "a"}, {"on", true}}, {{"n", "b"}, {"on", false}}};
  EXPECT_EQ(render("{{ u | selectattr('on') | map(attribute='n') | list }} "
                   "{{ u | rejectattr('on') | map(attribute='n') | list }} "
                   "{{ missing | default('d') }} {{ '' | default('e', true) }}",
                   ordered_json{{"u", u}}),
            R"(["a"] ["b"] d e)");
}

TEST(Jinja, Jinja2FiltersHuggingFaceLacks) {
  EXPECT_EQ(
      render("{{ [1, 2] | count }} {{ 2.567 | round(2) }} {{ 2.5 | round }} {{ '<a&\"b\">' | e }}"),
      "2 2.57 2.0 &lt;a&amp;&#34;b&#34;&gt;");
}

TEST(Jinja, StringAndDictMethods) {
  EXPECT_EQ(render("{{ ' a b '.strip() }}|{{ ' a '.lstrip() }}|{{ ' a '.rstrip() }}|"
                   "{{ 'a,b'.split(',') }}|{{ 'ab'.startswith('a') }}{{ 'ab'.endswith('a') }}|"
                   "{{ 'aa'.replace('a', 'b') }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'ab "
                   "cd'.title() }}"),
            R"(a b|a | a|["a", "b"]|truefalse|bb|ABab|Ab Cd)");
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('z', 'dz') }} {{ d.get('z') }} {{ d.keys() | list }} "
                   "{{ d.values() | list }}",
                   ordered_json{{"d", {{"a", 1}}}}),
            R"(1 dz  ["a"] [1])");
}

TEST(Jinja, StrftimeNowFormatsTheLocalDate) {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  EXPECT_EQ(render("{{ strftime_now('%Y') }}"), std::to_string(tm.tm_year + 1900));
}

TEST(Jinja, ParseErrorsNameTheLine) {
  EXPECT_EQ(render("ok\n{% if x %}\nno endif"),
            "PARSE ERROR: chat template line 2: unclosed {% if %} (missing {% endif %})");
  EXPECT_EQ(render("a\nb\n{{ x "), "PARSE ERROR: chat template line 3: unexpected end of template");
  EXPECT_EQ(render("{% frobnicate %}"),
            "PARSE ERROR: chat template line 1: unknown statement 'frobnicate'");
}

TEST(Jinja, RenderErrorsNameTheLine) {
  EXPECT_EQ(render("line one\n{{ raise_exception('Roles must alternate') }}"),
            "RENDER ERROR: chat template line 2: Roles must alternate");
  EXPECT_EQ(render("\n\n{{ 'a' | nosuchfilter }}"),
            "RENDER ERROR: chat template line 3: Unknown StringValue filter: nosuchfilter");
  EXPECT_EQ(render("{{ none + 1 }}"),
            "RENDER ERROR: chat template line 1: Cannot perform operation on null values");
}

TEST(Jinja, RunawayTemplatesFailInsteadOfHanging) {
  EXPECT_NE(
      render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
          .find("step limit"),
      std::string::npos);
  EXPECT_NE(render("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}").find("too deep"),
            std::string::npos);
  EXPECT_NE(render("{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(40) %}"
                   "{% set ns.s = ns.s ~ ns.s %}{% endfor %}")
                .find("16 MiB"),
            std::string::npos);
  EXPECT_NE(render("{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}")
                .find("nesting deeper"),
            std::string::npos);
}

TEST(Jinja, OneTemplateRendersConcurrently) {
  absl::StatusOr<Template> tmpl = Template::parse(
      "{% set ns = namespace(n=0) %}{% macro m(x) %}<{{ x }}>{% endmacro %}"
      "{% for i in range(200) %}{% set ns.n = ns.n + i %}{{ m(i) }}{% endfor %}{{ ns.n }}");
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  absl::StatusOr<std::string> expected = tmpl->render(ordered_json::object());
  ASSERT_TRUE(expected.ok()) << expected.status();
  std::vector<std::string> results(4);
  std::vector<std::thread> threads;
  for (size_t t = 0; t < results.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) results[t] = tmpl->render(ordered_json::object()).value();
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (const std::string& r : results) EXPECT_EQ(r, *expected);
}

TEST(RenderChatTemplate, PassesApplyChatTemplateVariables) {
  const char* src =
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
      "{% if add_generation_prompt %}<assistant>{% endif %}{{ tools is defined }}"
      "{{ enable_thinking }}{{ eos_token }}";
  nlohmann::json messages = {{{"role", "user"}, {"content", "hi"}}};
  absl::StatusOr<std::string> out = serve::render_chat_template(
      src, messages, nullptr, true, "<s>", "</s>", {{"enable_thinking", false}});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s><user>hi<assistant>falsefalse</s>");
  out = serve::render_chat_template(src, messages, nlohmann::json::array(), false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<user>hitrue");
}

TEST(RenderChatTemplate, OrderedJsonKeepsToolKeyOrder) {
  ordered_json tools = {{{"type", "function"}, {"function", {{"name", "f"}}}}};
  absl::StatusOr<std::string> out = serve::render_chat_template(
      "{{ tools[0] | tojson }}", ordered_json::array(), tools, false, "", "");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, R"({"type": "function", "function": {"name": "f"}})");
}

}  // namespace
}  // namespace weft::serve::jinja
