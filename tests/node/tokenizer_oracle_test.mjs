// weft tokenize against the official Hugging Face tokenizers library (npm `tokenizers`, the Rust
// library's Node binding) on four real tokenizer.json files: encode with and without special
// tokens, decode(ids, skip_special_tokens=false) on the oracle's ids and on random ids (invalid
// UTF-8 included), and decode(encode(x)) == x wherever the oracle round-trips.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
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

const started = Date.now();

async function checkTokenizer(name, dir, corpus) {
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

const corpus = [...HARD_CASES, ...randomCases(300, 1234, 12)];
for (const name of MODELS) await checkTokenizer(name, modelDir(name), corpus);

// Variants: a real file with its stages swapped, written to a scratch directory.
const scratch = join(process.env.WEFT_TMP || tmpdir(), 'tokenizer_oracle');
const load = (name) => JSON.parse(readFileSync(`${modelDir(name)}/tokenizer.json`, 'utf8'));
const metaspace = (scheme, split) =>
  ({ type: 'Metaspace', replacement: '\u2581', prepend_scheme: scheme, split });
const split = (pattern, behavior, invert = false) =>
  ({ type: 'Split', pattern, behavior, invert });
const byteLevel = (addPrefixSpace, useRegex) =>
  ({ type: 'ByteLevel', add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: useRegex });
const added = (file, content, flags) => {
  let id = 0;
  for (const v of Object.values(file.model.vocab)) id = Math.max(id, v + 1);
  for (const t of file.added_tokens) id = Math.max(id, t.id + 1);
  file.added_tokens.push({ id, content, single_word: false, lstrip: false, rstrip: false,
                           normalized: false, special: false, ...flags });
};
const variants = {
  // Mistral / Llama 2 files converted with legacy=false.
  'llama2-metaspace-first': (f) => {
    f.normalizer = null;
    f.pre_tokenizer = metaspace('first', false);
    f.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, metaspace('first', false)] };
  },
  'llama2-metaspace-split-lowercase': (f) => {
    f.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' },
                                                     { type: 'Strip', strip_left: true, strip_right: false }] };
    f.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      { type: 'Digits', individual_digits: true }, metaspace('always', true)] };
    f.decoder = { type: 'Sequence', decoders: [
      { type: 'Replace', pattern: { Regex: '\u2581+' }, content: ' ' }, { type: 'ByteFallback' },
      { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 2, stop: 0 }] };
    added(f, '<tool>', { lstrip: true, rstrip: true, special: true });
    added(f, 'hello', { single_word: true, normalized: true });
  },
  'qwen3-split-behaviors': (f) => {
    f.normalizer = { type: 'NFKC' };
    f.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      split({ Regex: '\\s+' }, 'MergedWithNext'), split({ String: 'e' }, 'MergedWithPrevious'),
      split({ Regex: '\\p{N}' }, 'Contiguous'), split({ Regex: '[.,!?]' }, 'Removed'),
      split({ Regex: '[^\\p{Han}]+' }, 'Isolated', true), byteLevel(false, false)] };
    f.post_processor = { type: 'RobertaProcessing', sep: ['<|im_end|>', 151645],
                         cls: ['<|im_start|>', 151644], trim_offsets: true, add_prefix_space: false };
    added(f, ' world', { rstrip: true, normalized: true });
  },
  'qwen3-gpt2-bytelevel': (f) => {
    f.normalizer = null;
    f.pre_tokenizer = { type: 'Sequence', pretokenizers: [
      { type: 'WhitespaceSplit' }, byteLevel(true, true)] };
    f.post_processor = { type: 'Sequence', processors: [byteLevel(true, false), {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|endoftext|>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [151643], tokens: ['<|endoftext|>'] } },
    }] };
  },
};
for (const [name, edit] of Object.entries(variants)) {
  const file = load(name.split('-')[0]);
  edit(file);
  const dir = join(scratch, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(file));
  await checkTokenizer(name, dir, [...HARD_CASES, ...randomCases(100, 4321, 12)]);
}
console.log(`${failures} mismatches in ${((Date.now() - started) / 1000).toFixed(1)} s`);
process.exit(failures ? 1 : 0);
