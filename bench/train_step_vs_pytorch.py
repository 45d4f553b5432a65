#!/usr/bin/python3
"""One training step of a small dense Llama: weft against PyTorch eager, same machine, one run.

Both train the same model from the same weights on the same tokens with AdamW (torch semantics)
and one CPU thread each; the script reports the median step time of each (first step excluded),
the ratio, peak resident memory, and the losses of both (they must agree).

  /usr/bin/python3 bench/train_step_vs_pytorch.py --weft build/weft [--steps 8] [--threads 1]

Uses Debian's python3-torch and the plain-torch model of tests/fixtures/reference_model.py.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def thread_count():
    """--threads, read before torch is imported: its OpenBLAS sizes its pool at load time."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if arg.startswith("--threads="):
            return arg.split("=", 1)[1]
    return "1"


os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = thread_count()
import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
import reference_model as ref  # noqa: E402
import safetensors_io  # noqa: E402

PRESETS = {
    "small": dict(vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                  num_attention_heads=8, num_key_value_heads=4, head_dim=32, seq_len=256, batch=8),
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, seq_len=64, batch=4),
}


def make_model(workdir, preset, steps, seed=0):
    p = dict(PRESETS[preset])
    seq_len, batch = p.pop("seq_len"), p.pop("batch")
    cfg = dict(architectures=["LlamaForCausalLM"], model_type="llama", rms_norm_eps=1e-5,
               rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=seq_len,
               hidden_act="silu", **p)
    gen = torch.Generator().manual_seed(seed)
    params = {}
    for name, shape in ref.param_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen)
        params[name] = 1 + 0.1 * noise if name.endswith("norm.weight") else 0.02 * noise
    model_dir = os.path.join(workdir, "model")
    os.makedirs(model_dir)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    with open(os.path.join(model_dir, "model.safetensors"), "wb") as f:
        f.write(safetensors_io.encode(params))
    tokens = torch.randint(0, cfg["vocab_size"], (steps * batch, seq_len), generator=gen)
    tokens_path = os.path.join(workdir, "tokens.txt")
    with open(tokens_path, "w") as f:
        for row in tokens.tolist():
            f.write(" ".join(map(str, row)) + "\n")
    return cfg, params, tokens, model_dir, tokens_path, seq_len, batch


def run_torch(cfg, params, tokens, steps, batch, lr, wd, threads):
    torch.set_num_threads(threads)
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    groups = [
        {"params": [p for p in leaves.values() if p.dim() >= 2], "weight_decay": wd},
        {"params": [p for p in leaves.values() if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    times, losses = [], []
    for step in range(steps):
        batch_tokens = tokens[step * batch:(step + 1) * batch]
        start = time.perf_counter()
        loss = ref.next_token_loss(ref.forward(cfg, leaves, batch_tokens), batch_tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return times, losses, peak_mib


def run_weft(weft, model_dir, tokens_path, workdir, steps, batch, seq_len, lr, wd, threads):
    metrics = os.path.join(workdir, "metrics.jsonl")
    env = dict(os.environ, WEFT_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    cmd = ["/usr/bin/time", "-f", "%M", weft, "train", "--model", model_dir, "--data",
           tokens_path, "--steps", str(steps), "--global-batch", str(batch), "--seq-len",
           str(seq_len), "--lr", str(lr), "--weight-decay", str(wd), "--metrics", metrics,
           "--log-every", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    peak_mib = int(out.stderr.strip().splitlines()[-1]) / 1024
    rows = [json.loads(line) for line in open(metrics)]
    return [r["step_time_s"] for r in rows], [r["loss"] for r in rows], peak_mib


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weft", default=os.path.join(ROOT, "build", "weft"))
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    lr, wd = 1e-3, 0.1
    with tempfile.TemporaryDirectory() as workdir:
        cfg, params, tokens, model_dir, tokens_path, seq_len, batch = make_model(
            workdir, args.preset, args.steps)
        w_times, w_losses, w_peak = run_weft(args.weft, model_dir, tokens_path, workdir,
                                             args.steps, batch, seq_len, lr, wd, args.threads)
        t_times, t_losses, t_peak = run_torch(cfg, params, tokens, args.steps, batch, lr, wd,
                                              args.threads)
    w_med, t_med = statistics.median(w_times[1:]), statistics.median(t_times[1:])
    n_params = sum(p.numel() for p in params.values())
    print(f"preset {args.preset}: {n_params / 1e6:.2f}M parameters, batch {batch} x {seq_len} "
          f"tokens, {args.steps} steps, {args.threads} thread(s), torch {torch.__version__}")
    print(f"{'':8} {'median step (s)':>16} {'tokens/s':>10} {'peak RSS (MiB)':>15} {'last loss':>10}")
    for name, med, peak, losses in (("weft", w_med, w_peak, w_losses),
                                    ("pytorch", t_med, t_peak, t_losses)):
        print(f"{name:8} {med:16.4f} {batch * seq_len / med:10.0f} {peak:15.0f} {losses[-1]:10.5f}")
    print(f"speed ratio (pytorch time / weft time): {t_med / w_med:.2f}x")
    worst = max(abs(a - b) / abs(b) for a, b in zip(w_losses, t_losses))
    print(f"largest relative loss difference over the steps: {worst:.2e}")
    if worst > 1e-3:
        sys.exit("weft and pytorch disagree on the losses")


if __name__ == "__main__":
    main()
