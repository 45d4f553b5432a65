// Encode throughput: weft tokenize vs Hugging Face tokenizers (npm `tokenizers`, the Rust library)
// on one thread, on the same few MB of text (this repository's docs and sources, plus the
// tokenizer test corpus), for the four tokenizer files in tests/node. Checks the ids are equal
// while it times.
//   node bench/tokenizer_bench.mjs [--mb 4] [--weft build/weft]
// weft's time is its wall time on the text minus its wall time on empty input (loading the
// tokenizer), so it includes reading JSON lines and printing ids; HF's is encode() alone.
process.env.RAYON_NUM_THREADS = '1';
process.env.TOKENIZERS_PARALLELISM = 'false';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nodeDir = join(root, 'tests/node');
const require = createRequire(join(nodeDir, 'package.json'));
const { Tokenizer } = require('tokenizers');
const { HARD_CASES, MODELS, modelDir, randomCases } = await import(
  join(nodeDir, 'tokenizer_corpus.mjs'));

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const megabytes = Number(arg('--mb', '4'));
const binary = arg('--weft', join(root, 'build/weft'));

function sources(dir, out) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (name.startsWith('.') || name === 'node_modules' || name.startsWith('build')) continue;
    if (statSync(path).isDirectory()) sources(path, out);
    else if (/\.(md|cc|h|cu|py|txt)$/.test(name)) out.push(readFileSync(path, 'utf8'));
  }
  return out;
}
let text = [...sources(root, []), ...HARD_CASES, ...randomCases(2000, 7, 20)].join('\n');
while (Buffer.byteLength(text) < megabytes * 1e6) text += '\n' + text;
text = text.slice(0, megabytes * 1e6);
const chunks = text.match(/[\s\S]{1,65536}/gu);
const bytes = Buffer.byteLength(text);

function runWeft(dir, lines) {
  const started = process.hrtime.bigint();
  const r = spawnSync(binary, ['tokenize', '--model', dir, '--no-special'], {
    input: lines.map((l) => JSON.stringify(l) + '\n').join(''), encoding: 'utf8',
    maxBuffer: 1 << 30 });
  if (r.status !== 0) throw new Error(r.stderr);
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, out: r.stdout };
}

console.log(`${(bytes / 1e6).toFixed(2)} MB in ${chunks.length} chunks, one thread`);
console.log('model   | HF encode s | weft encode s | weft load s | HF/weft | ids equal');
for (const name of MODELS) {
  const dir = join(nodeDir, modelDir(name));
  const hf = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
  await hf.encode('warm up', null, { addSpecialTokens: false });
  let started = process.hrtime.bigint();
  const hfIds = [];
  for (const c of chunks) hfIds.push((await hf.encode(c, null, { addSpecialTokens: false })).getIds());
  const hfSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  const load = Math.min(runWeft(dir, []).seconds, runWeft(dir, []).seconds);
  const full = runWeft(dir, chunks);
  const weftSeconds = full.seconds - load;
  const equal = full.out === hfIds.map((ids) => JSON.stringify(ids) + '\n').join('');
  console.log(`${name.padEnd(7)} | ${hfSeconds.toFixed(3).padStart(11)} | ` +
              `${weftSeconds.toFixed(3).padStart(13)} | ${load.toFixed(3).padStart(11)} | ` +
              `${(hfSeconds / weftSeconds).toFixed(2).padStart(7)} | ${equal}`);
}
