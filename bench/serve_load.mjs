// A load generator for `weft serve` (as vLLM's benchmark_serving): a seeded Poisson stream of
// completion requests with token-id prompts, input and output lengths drawn uniformly from
// stated ranges, every answer streamed. Reports request throughput, output tokens/s, TTFT,
// TPOT = (latency - TTFT) / (output tokens - 1), inter-token latency (p50/p90/p99) and goodput
// (requests/s meeting both SLOs). Prints one JSON object.
//
//   node bench/serve_load.mjs --url http://127.0.0.1:8000 --rate 4 --requests 64 --seed 1 \
//        --input 32:512 --output 16:256 --vocab 4096 --slo-ttft 2 --slo-tpot 0.1 [--prefix 1000]
// --rate 1e9 sends every request at once (a batch); --prefix N starts every prompt with the same
// N tokens.
const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1]]);
  return acc;
}, []));
const url = args.url;
const rate = Number(args.rate ?? 1);
const count = Number(args.requests ?? 64);
const [inLo, inHi] = (args.input ?? '32:512').split(':').map(Number);
const [outLo, outHi] = (args.output ?? '16:256').split(':').map(Number);
const vocab = Number(args.vocab ?? 4096);
const sloTtft = Number(args['slo-ttft'] ?? 2);
const sloTpot = Number(args['slo-tpot'] ?? 0.1);
const model = args.model;
const prefixLen = Number(args.prefix ?? 0);  // tokens every prompt starts with (prefix caching)
if (!url || !model) throw new Error('--url and --model are required');

let state = Number(args.seed ?? 1) >>> 0 || 1;
const uniform = () => {  // xorshift32 in (0, 1)
  state ^= state << 13; state >>>= 0; state ^= state >>> 17; state ^= state << 5; state >>>= 0;
  return (state + 0.5) / 4294967296;
};
const between = (lo, hi) => lo + Math.floor(uniform() * (hi - lo + 1));

// The trace: arrival offsets (exponential gaps), prompts, output lengths — fixed by the seed.
const shared = Array.from({ length: prefixLen }, () => between(0, vocab - 1));
const trace = [];
let at = 0;
for (let i = 0; i < count; i++) {
  at += -Math.log(uniform()) / rate;
  const len = between(inLo, inHi);
  const prompt = [...shared, ...Array.from({ length: len }, () => between(0, vocab - 1))];
  trace.push({ at, prompt, maxTokens: between(outLo, outHi) });
}

async function one(req, start) {
  const wait = start + req.at * 1000 - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const sent = performance.now();
  const res = await fetch(url + '/v1/completions', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      model, prompt: req.prompt, max_tokens: req.maxTokens, temperature: 0, ignore_eos: true,
      stream: true, return_token_ids: true,
    }),
  });
  if (res.status !== 200) return { ok: false, status: res.status };
  const times = [];
  let tokens = 0, buffer = '';
  const decoder = new TextDecoder();
  for await (const part of res.body) {
    buffer += decoder.decode(part, { stream: true });
    let cut;
    while ((cut = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      const chunk = JSON.parse(event.slice(6));
      const n = chunk.choices?.[0]?.token_ids?.length ?? 0;
      if (n > 0) {
        const now = performance.now();
        for (let k = 0; k < n; k++) times.push(now);
        tokens += n;
      }
    }
  }
  const end = performance.now();
  const ttft = (times[0] - sent) / 1000;
  const latency = (end - sent) / 1000;
  const itl = [];
  for (let k = 1; k < times.length; k++) itl.push((times[k] - times[k - 1]) / 1000);
  return { ok: true, ttft, latency, tokens, tpot: tokens > 1 ? (latency - ttft) / (tokens - 1) : 0, itl };
}

const pct = (xs, p) => {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};

const start = performance.now();
const results = await Promise.all(trace.map((r) => one(r, start)));
const makespan = (performance.now() - start) / 1000;
const ok = results.filter((r) => r.ok);
const good = ok.filter((r) => r.ttft <= sloTtft && r.tpot <= sloTpot);
const summary = (xs) => ({ p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99) });
console.log(JSON.stringify({
  rate, requests: count, completed: ok.length, failed: results.length - ok.length,
  input: `${inLo}:${inHi}`, shared_prefix: prefixLen, output: `${outLo}:${outHi}`, seed: Number(args.seed ?? 1),
  makespan_s: makespan,
  request_throughput: ok.length / makespan,
  output_tokens_per_s: ok.reduce((a, r) => a + r.tokens, 0) / makespan,
  ttft_s: summary(ok.map((r) => r.ttft)),
  tpot_s: summary(ok.map((r) => r.tpot)),
  itl_s: summary(ok.flatMap((r) => r.itl)),
  slo: { ttft_s: sloTtft, tpot_s: sloTpot },
  goodput: good.length / makespan,
  slo_attainment: good.length / count,
}));
