"""Writes a Llama model directory (config.json + f32 model.safetensors, e.g. the bench Llama of
bench/serve_bench.sh) as a GGUF v3 file that llama.cpp loads, for the llama.cpp decode
comparison (bench/decode_llamacpp.mjs). f32 tensors, llama.cpp's tensor names, and q/k rows
reordered from Hugging Face's rotate-half layout to the pairwise layout of llama.cpp's rope.
The vocabulary is placeholders (the benchmark feeds token ids): "<unk>", "<s>", "</s>", the 256
byte tokens and the space piece llama.cpp's SentencePiece loader looks up, then "t260", ...

Usage: python3 bench/llama_to_gguf.py MODEL_DIR OUT.gguf
"""
import json
import struct
import sys

import numpy as np

from safetensors_f32 import read_f32

ALIGN = 32
U32, I32, F32, STRING, ARRAY = 4, 5, 6, 8, 9
GGML_F32 = 0


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    out = gguf_string(key) + struct.pack("<I", vtype)
    if vtype == U32:
        return out + struct.pack("<I", value)
    if vtype == F32:
        return out + struct.pack("<f", value)
    if vtype == STRING:
        return out + gguf_string(value)
    etype, items = value  # ARRAY
    out += struct.pack("<IQ", etype, len(items))
    if etype == STRING:
        return out + b"".join(gguf_string(x) for x in items)
    fmt = {F32: "<f", I32: "<i"}[etype]
    return out + b"".join(struct.pack(fmt, x) for x in items)


def rope_pairs(w, heads):
    """[heads * d, in] rows of rotate-half halves (x_i, x_{i+d/2}) -> adjacent pairs."""
    rows, cols = w.shape
    d = rows // heads
    return w.reshape(heads, 2, d // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main(model_dir, out_path):
    with open(f"{model_dir}/config.json") as f:
        c = json.load(f)
    w = read_f32(f"{model_dir}/model.safetensors")
    heads, kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
    head_dim = c.get("head_dim") or c["hidden_size"] // heads
    vocab = c["vocab_size"]
    tensors = [("token_embd.weight", w["model.embed_tokens.weight"]),
               ("output_norm.weight", w["model.norm.weight"])]
    if "lm_head.weight" in w:
        tensors.append(("output.weight", w["lm_head.weight"]))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        tensors += [
            (f"blk.{i}.attn_norm.weight", w[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", rope_pairs(w[p + "self_attn.q_proj.weight"], heads)),
            (f"blk.{i}.attn_k.weight", rope_pairs(w[p + "self_attn.k_proj.weight"], kv_heads)),
            (f"blk.{i}.attn_v.weight", w[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", w[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", w[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", w[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", w[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", w[p + "mlp.down_proj.weight"]),
        ]
    # SentencePiece layout: specials, the 256 byte tokens llama.cpp looks up, "\u2581" (space).
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581"]
    tokens += [f"t{i}" for i in range(len(tokens), vocab)]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)
    meta = [
        kv("general.architecture", STRING, "llama"),
        kv("general.name", STRING, "weft bench llama"),
        kv("general.alignment", U32, ALIGN),
        kv("llama.context_length", U32, c["max_position_embeddings"]),
        kv("llama.embedding_length", U32, c["hidden_size"]),
        kv("llama.block_count", U32, c["num_hidden_layers"]),
        kv("llama.feed_forward_length", U32, c["intermediate_size"]),
        kv("llama.attention.head_count", U32, heads),
        kv("llama.attention.head_count_kv", U32, kv_heads),
        kv("llama.attention.key_length", U32, head_dim),
        kv("llama.attention.value_length", U32, head_dim),
        kv("llama.rope.dimension_count", U32, head_dim),
        kv("llama.rope.freq_base", F32, float(c.get("rope_theta", 10000.0))),
        kv("llama.attention.layer_norm_rms_epsilon", F32, float(c["rms_norm_eps"])),
        kv("llama.vocab_size", U32, vocab),
        kv("tokenizer.ggml.model", STRING, "llama"),
        kv("tokenizer.ggml.tokens", ARRAY, (STRING, tokens)),
        kv("tokenizer.ggml.scores", ARRAY, (F32, [0.0] * vocab)),
        kv("tokenizer.ggml.token_type", ARRAY, (I32, types)),
        kv("tokenizer.ggml.unknown_token_id", U32, 0),
        kv("tokenizer.ggml.bos_token_id", U32, 1),
        kv("tokenizer.ggml.eos_token_id", U32, 2),
    ]
    infos, blobs, offset = [], [], 0
    for name, t in tensors:
        t = np.ascontiguousarray(t, dtype="<f4")
        dims = list(reversed(t.shape))  # ggml: the fastest dimension first
        infos.append(gguf_string(name) + struct.pack("<I", len(dims)) +
                     b"".join(struct.pack("<Q", d) for d in dims) +
                     struct.pack("<IQ", GGML_F32, offset))
        blob = t.tobytes()
        pad = (-len(blob)) % ALIGN
        blobs.append(blob + b"\0" * pad)
        offset += len(blob) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(meta)) + b"".join(meta) + b"".join(
        infos)
    head += b"\0" * ((-len(head)) % ALIGN)
    with open(out_path, "wb") as f:
        f.write(head)
        for blob in blobs:
            f.write(blob)
    print(f"wrote {out_path}: {len(tensors)} tensors, vocabulary {vocab}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
