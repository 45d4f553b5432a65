"""Greedy decoding of a Llama model directory (config.json + f32 model.safetensors) in PyTorch,
for bench/serve_bench.sh: the same model and batch shapes as weft's decode runs, on one thread.

A plain eager implementation with a preallocated KV cache (what a PyTorch user writes without a
serving engine): RMSNorm, rotary embeddings (rotate-half), grouped-query attention, SwiGLU.
Prints one JSON line per batch size with the decode tokens/s (new tokens after the first, over
the decode time), the prefill time, and sequence 0's prompt and first 8 greedy ids (to check
against `weft generate --prompt-ids ... --greedy --ignore-eos`).

Usage: python3 bench/decode_torch.py MODEL_DIR [--batches 1,8,32] [--prompt 16] [--new 128]
"""
import argparse
import json
import time

import torch

from safetensors_f32 import read_f32


class Llama:
    def __init__(self, model_dir):
        with open(f"{model_dir}/config.json") as f:
            self.c = json.load(f)
        self.w = {k: torch.from_numpy(v.copy()) for k, v in
                  read_f32(f"{model_dir}/model.safetensors").items()}
        c = self.c
        self.heads, self.kv_heads = c["num_attention_heads"], c["num_key_value_heads"]
        self.head_dim = c.get("head_dim") or c["hidden_size"] // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = c["rms_norm_eps"]
        inv = 1.0 / (c.get("rope_theta", 10000.0) ** (torch.arange(0, self.head_dim, 2).float()
                                                       / self.head_dim))
        pos = torch.arange(c["max_position_embeddings"]).float()
        freqs = torch.outer(pos, inv)
        self.cos = torch.cat([freqs, freqs], -1).cos()
        self.sin = torch.cat([freqs, freqs], -1).sin()
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def norm(self, x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * weight

    def rope(self, x, positions):  # x [B, T, H, d]
        cos = self.cos[positions][None, :, None, :]
        sin = self.sin[positions][None, :, None, :]
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    @torch.no_grad()
    def forward(self, ids, start, cache):  # ids [B, T] -> logits of the last position [B, V]
        b, t = ids.shape
        positions = torch.arange(start, start + t)
        x = self.w["model.embed_tokens.weight"][ids]
        group = self.heads // self.kv_heads
        for i in range(self.layers):
            p = f"model.layers.{i}."
            h = self.norm(x, self.w[p + "input_layernorm.weight"])
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).view(b, t, self.heads, self.head_dim)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).view(b, t, self.kv_heads,
                                                                   self.head_dim)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).view(b, t, self.kv_heads,
                                                                   self.head_dim)
            q, k = self.rope(q, positions), self.rope(k, positions)
            kc, vc = cache[i]
            kc[:, start:start + t] = k
            vc[:, start:start + t] = v
            keys = kc[:, :start + t].repeat_interleave(group, dim=2).transpose(1, 2)
            vals = vc[:, :start + t].repeat_interleave(group, dim=2).transpose(1, 2)
            # Debian's torch 1.13 has no scaled_dot_product_attention: the textbook form.
            scores = (q.transpose(1, 2) @ keys.transpose(-1, -2)) / self.head_dim ** 0.5
            if t > 1:  # query i at position start + i sees keys up to it
                visible = torch.arange(start + t)[None, :] <= positions[:, None]
                scores = scores.masked_fill(~visible, float("-inf"))
            o = torch.softmax(scores, -1) @ vals
            o = o.transpose(1, 2).reshape(b, t, self.heads * self.head_dim)
            x = x + o @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.norm(x, self.w[p + "post_attention_layernorm.weight"])
            gate = h @ self.w[p + "mlp.gate_proj.weight"].T
            up = h @ self.w[p + "mlp.up_proj.weight"].T
            x = x + (torch.nn.functional.silu(gate) * up) @ self.w[p + "mlp.down_proj.weight"].T
        x = self.norm(x[:, -1], self.w["model.norm.weight"])
        return x @ self.head.T

    def new_cache(self, batch, length):
        shape = (batch, length, self.kv_heads, self.head_dim)
        return [(torch.zeros(shape), torch.zeros(shape)) for _ in range(self.layers)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = Llama(args.model)
    vocab = model.c["vocab_size"]
    for batch in (int(b) for b in args.batches.split(",")):
        gen = torch.Generator().manual_seed(batch)
        ids = torch.randint(0, vocab, (batch, args.prompt), generator=gen)
        cache = model.new_cache(batch, args.prompt + args.new)
        start = time.perf_counter()
        token = model.forward(ids, 0, cache).argmax(-1, keepdim=True)
        prefill_s = time.perf_counter() - start
        first = [int(token[0, 0])]
        start = time.perf_counter()
        for step in range(1, args.new):
            token = model.forward(token, args.prompt + step - 1, cache).argmax(-1, keepdim=True)
            first.append(int(token[0, 0]))
        decode_s = time.perf_counter() - start
        print(json.dumps({"engine": "pytorch", "torch": torch.__version__,
                          "threads": args.threads, "batch": batch, "prompt": args.prompt,
                          "new_tokens": args.new, "prefill_s": prefill_s,
                          "decode_tokens_per_s": batch * (args.new - 1) / decode_s,
                          "prompt_ids_0": ids[0].tolist(), "greedy_ids_0": first[:8]}))


if __name__ == "__main__":
    main()
