#!/usr/bin/python3
"""Training-step time of `weft train` under meshes, and how long the loop waits for checkpoints.

(tp, pp, dp, ZeRO-1 and sequence parallelism.)

Runs the same small Llama (random weights from one seed, same tokens, same global batch) under
each mesh, reads the per-step metrics JSON lines, and prints markdown tables:

  1. median step time (first step excluded) per mesh, relative to one rank, with the final loss
     (every mesh must reach the one-rank loss: the same run, split differently);
  2. data parallelism with the gradient all-reduce overlapped with the backward (default)
     against `--sync-grad-reduce`;
  3. checkpoints: the loop's wait per save (`checkpoint_wait_s`) with `--sync-save` (blocking:
     snapshot, write, SHA-256, rename) against the default asynchronous save, and the wait for
     the last save before exit (both modes wait for it).

  /usr/bin/python3 bench/parallel_train_bench.py --weft build/weft [--steps 8] [--hidden 512]

Ranks share this machine's cores (WEFT_NUM_THREADS = cores / ranks): on a 2-core machine,
ranks above 2 are oversubscribed, so these numbers show the overheads of each scheme, not the
speedup a cluster gets.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile


def write_model(path, hidden, layers, vocab):
    os.makedirs(path, exist_ok=True)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": hidden * 11 // 4,
        "num_hidden_layers": layers,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)


def write_tokens(path, lines, seq_len, vocab):
    state = 12345
    with open(path, "w") as f:
        for _ in range(lines):
            row = []
            for _ in range(seq_len):
                state = (state * 1103515245 + 12345) % (1 << 31)
                row.append(str(state % vocab))
            f.write(" ".join(row) + "\n")


def run(args, work, name, ranks, flags):
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    metrics = os.path.join(out, "metrics.jsonl")
    cmd = [args.weft, "train", "--model", os.path.join(work, "model"), "--init-random",
           "--seed", "3", "--data", os.path.join(work, "tokens.txt"), "--steps", str(args.steps),
           "--global-batch", str(args.global_batch), "--seq-len", str(args.seq_len),
           "--lr", "1e-3", "--metrics", metrics, "--log-every", "1000"] + flags.split()
    cmd = [a.replace("{out}", out) for a in cmd]
    if ranks > 1:
        cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks)] + cmd
    env = dict(os.environ)
    env["WEFT_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{name} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    with open(metrics) as f:
        steps = [json.loads(line) for line in f if line.strip()]
    return {
        "step_s": statistics.median(s["step_time_s"] for s in steps[1:]),
        "loss": steps[-1]["loss"],
        "waits": [s["checkpoint_wait_s"] for s in steps],
        # checkpoint_wait_s adds the waits outside step_time_s (its snapshot wait, a few
        # milliseconds, is inside both)
        "loop_s": sum(s["step_time_s"] + s["checkpoint_wait_s"] for s in steps),
        "command": " ".join(cmd).replace(work, "$WORK"),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weft", default="build/weft")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--global-batch", type=int, default=8)
    args = p.parse_args()
    args.weft = os.path.abspath(args.weft)

    work = tempfile.mkdtemp(prefix="weft_parallel_bench_")
    write_model(os.path.join(work, "model"), args.hidden, args.layers, args.vocab)
    write_tokens(os.path.join(work, "tokens.txt"), args.global_batch * (args.steps + 1),
                 args.seq_len, args.vocab)
    print(f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; "
          f"global batch {args.global_batch} x {args.seq_len} tokens; {args.steps} steps; "
          f"{os.cpu_count()} cores\n")

    meshes = [
        ("1 rank", 1, ""),
        ("dp2", 2, ""),
        ("dp2 --zero 1", 2, "--zero 1"),
        ("tp2", 2, "--tp 2"),
        ("tp2 --sequence-parallel", 2, "--tp 2 --sequence-parallel"),
        ("pp2, 1F1B, 4 micro-batches", 2, "--pp 2 --micro-batch 2"),
        ("pp2 --pp-virtual 2, 4 micro-batches", 2, "--pp 2 --pp-virtual 2 --micro-batch 2"),
        ("tp2 x pp2 (4 ranks)", 4, "--tp 2 --pp 2 --micro-batch 2"),
        ("tp2 x dp2 (4 ranks)", 4, "--tp 2"),
        ("sp2, ring (zigzag)", 2, "--sp 2"),
        ("sp2 --sp-attn ulysses", 2, "--sp 2 --sp-attn ulysses"),
        ("tp2 x sp2 (4 ranks)", 4, "--tp 2 --sp 2"),
    ]
    results = {name: run(args, work, f"mesh{i}", ranks, flags)
               for i, (name, ranks, flags) in enumerate(meshes)}
    base = results["1 rank"]["step_s"]
    print("| mesh | ranks | step (s) | vs 1 rank | final loss |")
    print("| --- | --- | --- | --- | --- |")
    for name, ranks, _ in meshes:
        r = results[name]
        print(f"| {name} | {ranks} | {r['step_s']:.3f} | {r['step_s'] / base:.2f}x "
              f"| {r['loss']:.6f} |")

    print("\n| dp2, micro-batch 1 | step (s) | final loss |")
    print("| --- | --- | --- |")
    for name, dirname, flags in [
            ("overlapped (default)", "dp_overlap", "--micro-batch 1"),
            ("--sync-grad-reduce", "dp_sync", "--micro-batch 1 --sync-grad-reduce")]:
        r = run(args, work, dirname, 2, flags)
        print(f"| {name} | {r['step_s']:.3f} | {r['loss']:.6f} |")

    print("\n| checkpoint every 2 steps, 1 rank | loop wait per save (s) | wait for the last "
          "save (s) | median step (s) | all steps + waits (s) |")
    print("| --- | --- | --- | --- | --- |")
    for name, dirname, flags in [
            ("asynchronous (default)", "ckpt_async", "--save {out}/ckpt --save-every 2"),
            ("--sync-save (blocking)", "ckpt_sync", "--save {out}/ckpt --save-every 2 --sync-save")]:
        r = run(args, work, dirname, 1, flags)
        saves = [w for i, w in enumerate(r["waits"][:-1]) if (i + 1) % 2 == 0]
        print(f"| {name} | {statistics.median(saves):.4f} | {r['waits'][-1]:.3f} "
              f"| {r['step_s']:.3f} | {r['loop_s']:.3f} |")
    newest = os.path.join(work, "ckpt_sync", "ckpt", f"step-{args.steps:08d}")
    size = sum(os.path.getsize(os.path.join(newest, f)) for f in os.listdir(newest))
    print(f"\none checkpoint: {size / 1e6:.1f} MB (weights and both AdamW moments, f32)")
    print(f"\ncommand of one run (WORK is a temporary directory): "
          f"{results['tp2 x pp2 (4 ranks)']['command']}")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
