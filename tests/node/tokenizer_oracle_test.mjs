// weft tokenize against the official Hugging Face tokenizers library (npm `tokenizers`, the Rust
// library's Node binding) on four real tokenizer.json files: encode with and without special
// tokens, decode(ids, skip_special_tokens=false) on the oracle's ids and on random ids (invalid
// UTF-8 included), and decode(encode(x)) == x wherever the oracle round-trips.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { HARD_CASES, MODELS, modelDir, randomCases } from './tokenizer_corpus.mjs';

const require = createRequire(import.meta.url);
const binary = process.env.WEFT_BINARY;
if (!binary || !existsSync(binary)) {
  console.error(`WEFT_BINARY is not set to the weft binary (got '${binary}')`);
  process.exit(1);
}
if (!existsSync('node_modules/tokenizers')) {
  console.error('node_modules is missing: run `npm ci` in tests/node (tests/run.sh does)');
  process.exit(1);
}
const { Tokenizer } = require('tokenizers');

function weft(args, lines) {
  const r = spawnSync(binary, ['tokenize', ...args], {
    input: lines.map((l) => l + '\n').join(''),
    encoding: 'utf8',
    maxBuffer: 1 << 30,
  });
  if (r.status !== 0) throw new Error(`weft tokenize ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  const out = r.stdout.split('\n');
  if (out.pop() !== '') throw new Error('weft tokenize output does not end with a newline');
  if (out.length !== lines.length) {
    throw new Error(`weft tokenize printed ${out.length} lines for ${lines.length} inputs`);
  }
  return out.map((l) => JSON.parse(l));
}

const show = (v) => {
  const s = JSON.stringify(v);
  return s.length > 300 ? s.slice(0, 300) + '...' : s;
};

let failures = 0;
function check(what, model, input, want, got) {
  if (JSON.stringify(want) === JSON.stringify(got)) return;
  if (++failures <= 12) {
    console.error(`MISMATCH ${model} ${what}\n  input: ${show(input)}\n  hf:    ${show(want)}\n` +
                  `  weft:  ${show(got)}`);
  }
}

const corpus = [...HARD_CASES, ...randomCases(300, 1234, 12)];
const started = Date.now();
for (const name of MODELS) {
  const dir = modelDir(name);
  const hf = Tokenizer.fromFile(`${dir}/tokenizer.json`);
  const withSpecial = [];
  const without = [];
  for (const text of corpus) {
    withSpecial.push((await hf.encode(text, null, { addSpecialTokens: true })).getIds());
    without.push((await hf.encode(text, null, { addSpecialTokens: false })).getIds());
  }
  const inputs = corpus.map((t) => JSON.stringify(t));
  const gotSpecial = weft(['--model', dir], inputs);
  const gotWithout = weft(['--model', dir, '--no-special'], inputs);
  corpus.forEach((text, i) => {
    check('encode(add_special_tokens=true)', name, text, withSpecial[i], gotSpecial[i]);
    check('encode(add_special_tokens=false)', name, text, without[i], gotWithout[i]);
  });

  // Decode the oracle's ids, prefixes of them (cut characters) and random ids.
  const vocab = hf.getVocabSize(true);
  let seed = 99;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
  const idLists = [...withSpecial];
  for (const ids of withSpecial.slice(0, 120)) idLists.push(ids.slice(0, 1 + rand(ids.length + 1)));
  for (let i = 0; i < 100; ++i) idLists.push(Array.from({ length: 1 + rand(20) }, () => rand(vocab)));
  const wantDecoded = [];
  for (const ids of idLists) wantDecoded.push(await hf.decode(ids, false));
  const gotDecoded = weft(['--model', dir, '--decode'], idLists.map((ids) => JSON.stringify(ids)));
  idLists.forEach((ids, i) => check('decode(skip_special_tokens=false)', name, ids,
                                    wantDecoded[i], gotDecoded[i]));

  let roundTrips = 0;
  const gotRound = weft(['--model', dir, '--decode'], without.map((ids) => JSON.stringify(ids)));
  for (let i = 0; i < corpus.length; ++i) {
    if ((await hf.decode(without[i], false)) !== corpus[i]) continue;
    ++roundTrips;
    check('decode(encode(x)) == x', name, corpus[i], corpus[i], gotRound[i]);
  }
  console.log(`${name}: ${corpus.length} texts encoded twice, ${idLists.length} id lists ` +
              `decoded, ${roundTrips} round trips`);
}
console.log(`${failures} mismatches in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failures ? 1 : 0);
