// Writes a random Llama model directory (config.json + model.safetensors, f32) for the serving
// tests and benchmarks, optionally with a real tokenizer's files copied in. Deterministic from
// `seed`; weights uniform in [-scale, scale] (norm weights 1).
import fs from 'node:fs';
import path from 'node:path';

export function writeLlama(dir, {
  vocab, hidden, inter, layers, heads, kvHeads, maxPositions = 256, ropeTheta = 500000.0,
  tied = true, seed = 12345, scale = 0.5, eos = null, bos = null, tokenizerDir = null,
}) {
  fs.mkdirSync(dir, { recursive: true });
  const headDim = hidden / heads;
  const config = {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: vocab,
    hidden_size: hidden, intermediate_size: inter, num_hidden_layers: layers,
    num_attention_heads: heads, num_key_value_heads: kvHeads, head_dim: headDim,
    max_position_embeddings: maxPositions, rms_norm_eps: 1e-5, rope_theta: ropeTheta,
    tie_word_embeddings: tied, torch_dtype: 'float32',
  };
  if (bos !== null) config.bos_token_id = bos;
  if (eos !== null) config.eos_token_id = eos;
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));
  let s = seed >>> 0 || 1;
  const rand = () => {  // xorshift32
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return (s / 4294967296 - 0.5) * 2 * scale;
  };
  const tensors = [];
  const add = (name, shape, fill) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = fill === undefined ? rand() : fill;
    tensors.push({ name, shape, data });
  };
  add('model.embed_tokens.weight', [vocab, hidden]);
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`;
    add(p + 'input_layernorm.weight', [hidden], 1);
    add(p + 'post_attention_layernorm.weight', [hidden], 1);
    add(p + 'self_attn.q_proj.weight', [heads * headDim, hidden]);
    add(p + 'self_attn.k_proj.weight', [kvHeads * headDim, hidden]);
    add(p + 'self_attn.v_proj.weight', [kvHeads * headDim, hidden]);
    add(p + 'self_attn.o_proj.weight', [hidden, heads * headDim]);
    add(p + 'mlp.gate_proj.weight', [inter, hidden]);
    add(p + 'mlp.up_proj.weight', [inter, hidden]);
    add(p + 'mlp.down_proj.weight', [hidden, inter]);
  }
  add('model.norm.weight', [hidden], 1);
  if (!tied) add('lm_head.weight', [vocab, hidden]);
  const header = {};
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  const fd = fs.openSync(path.join(dir, 'model.safetensors'), 'w');
  fs.writeSync(fd, len);
  fs.writeSync(fd, h);
  for (const t of tensors) fs.writeSync(fd, Buffer.from(t.data.buffer));
  fs.closeSync(fd);
  if (tokenizerDir) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
      fs.copyFileSync(path.join(tokenizerDir, f), path.join(dir, f));
    }
  }
  return dir;
}
