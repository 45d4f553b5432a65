// Greedy decoding of a GGUF model (bench/llama_to_gguf.py) in llama.cpp through node-llama-cpp
// (pinned in bench/package.json; its prebuilt CPU binary), for bench/serve_bench.sh: `batch`
// sequences of one context decode together (llama.cpp batches them into one decode call), on
// `--threads` threads. Prints one JSON line per batch size: the decode tokens/s (tokens after each
// sequence's first, from the moment every sequence had its first token to the last token) and
// sequence 0's prompt and first 8 greedy ids (to check against `weft generate`).
//
// Usage: node bench/decode_llamacpp.mjs MODEL.gguf [--batches 1,8,32] [--prompt 16] [--new 128]
//        [--vocab 4096] [--threads 1]
import { getLlama } from 'node-llama-cpp';

const args = process.argv.slice(2);
const modelPath = args[0];
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const batches = opt('batches', '1,8,32').split(',').map(Number);
const promptLen = Number(opt('prompt', 16));
const newTokens = Number(opt('new', 128));
const vocab = Number(opt('vocab', 4096));
const threads = Number(opt('threads', 1));

// A seeded xorshift for the prompts (ids >= 260: past the GGUF's special and byte tokens).
let state = 12345;
const nextId = () => {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return 260 + ((state >>> 0) % (vocab - 260));
};

const llama = await getLlama({ gpu: false, build: 'never' });
const model = await llama.loadModel({ modelPath });
for (const batch of batches) {
  const context = await model.createContext({
    contextSize: batch * (promptLen + newTokens + 16),
    sequences: batch,
    batchSize: Math.max(512, batch * promptLen),
    threads,
  });
  const prompts = Array.from({ length: batch }, () => Array.from({ length: promptLen }, nextId));
  const times = [];  // per sequence: the time of each generated token
  const ids = [];
  const runs = prompts.map(async (prompt, s) => {
    const sequence = context.getSequence();
    times[s] = [];
    ids[s] = [];
    for await (const token of sequence.evaluate(prompt, { temperature: 0 })) {
      times[s].push(performance.now());
      ids[s].push(token);
      if (ids[s].length >= newTokens) break;
    }
  });
  const start = performance.now();
  await Promise.all(runs);
  const firstAll = Math.max(...times.map((t) => t[0]));
  const last = Math.max(...times.map((t) => t[t.length - 1]));
  const after = times.reduce((n, t) => n + t.filter((x) => x > firstAll).length, 0);
  console.log(JSON.stringify({
    engine: 'llama.cpp', package: 'node-llama-cpp 3.21.1', threads, batch, prompt: promptLen,
    new_tokens: newTokens, first_token_s: (firstAll - start) / 1000,
    decode_tokens_per_s: after / ((last - firstAll) / 1000),
    prompt_ids_0: prompts[0], greedy_ids_0: ids[0].slice(0, 8),
  }));
  await context.dispose();
}
await model.dispose();
await llama.dispose();
