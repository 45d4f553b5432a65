#!/usr/bin/python3
"""Weak and strong scaling of `weft train` over dp, tp, pp, sp and ep at 1-8 ranks, against
what `weft plan` predicts for each run (step time and per-rank peak memory).

  /usr/bin/python3 bench/scaling/scaling_bench.py --weft build/weft [--out bench/scaling]
  # under Slurm, on several nodes (ranks spread by srun):
  WEFT_LAUNCHER="srun --mpi=pmix" /usr/bin/python3 bench/scaling/scaling_bench.py ...

Strong scaling: one global batch (16 sequences of 256 tokens), split over 1, 2, 4, 8 ranks
along one dimension at a time (the others 1). Weak scaling: the work per rank is fixed: dp and
pp add sequences (4 per rank), sp adds positions (128 per rank), ep adds experts' ranks for the
same tokens per rank (tp has no weak-scaling form here: it would grow the model). Models: a
dense Llama (8 layers, hidden 256, 8 heads / 4 KV heads, vocab 4096) and, for ep, a Mixtral of
the same shape with 8 experts, top-2; random weights from --seed (`--init-random`).

For each run: the median step time of steps 2..N (step 1 warms up) and rank 0's peak tensor
bytes from the metrics, and `weft plan --mesh ... --json`'s prediction for the same layout.
Writes results.json, scaling.png (tokens/s: measured solid, predicted dashed) and
predicted_vs_measured.png into --out, and prints markdown tables for bench/RESULTS.md.

On one machine the ranks share its cores (WEFT_NUM_THREADS = cores / ranks), so above the core
count they are oversubscribed: the curves show the schemes' overheads there, not a cluster's
speedup. The planner models exactly that (its per-rank speed is the node's cores / ranks).
"""

import argparse
import json
import re
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parallel_train_bench  # noqa: E402  (bench/: the shared token-file generator)

LAYERS, HIDDEN, HEADS, KV_HEADS, VOCAB = 8, 256, 8, 4, 4096


def write_model(path, experts=0):
    os.makedirs(path, exist_ok=True)
    config = {
        "architectures": ["MixtralForCausalLM" if experts else "LlamaForCausalLM"],
        "model_type": "mixtral" if experts else "llama",
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": HIDDEN * 11 // 4,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
    }
    if experts:
        config.update({"num_local_experts": experts, "num_experts_per_tok": 2})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def write_tokens(path, lines, seq_len):
    """The token file of bench/parallel_train_bench.py (the same generator), returning its path."""
    parallel_train_bench.write_tokens(path, lines, seq_len, VOCAB)
    return path


def launcher(ranks):
    custom = os.environ.get("WEFT_LAUNCHER")
    if custom:
        return shlex.split(custom) + ["-n", str(ranks)]
    return ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks)]


def measure(args, work, run):
    """Trains `run` and returns (median step seconds, peak bytes of rank 0, last loss)."""
    tokens = write_tokens(os.path.join(work, f"tokens_{run['batch']}_{run['seq']}.txt"),
                          run["batch"], run["seq"])
    metrics = os.path.join(work, "metrics.jsonl")
    cmd = [args.weft, "train", "--model", run["model"], "--init-random", "--seed", str(args.seed),
           "--data", tokens, "--steps", str(args.steps), "--global-batch", str(run["batch"]),
           "--seq-len", str(run["seq"]), "--metrics", metrics, "--log-every", "1000"]
    cmd += shlex.split(run["flags"])
    ranks = run["ranks"]
    if ranks > 1:
        cmd = launcher(ranks) + cmd
    env = dict(os.environ)
    env["WEFT_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // ranks))
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    with open(metrics) as f:
        lines = [json.loads(l) for l in f]
    times = [l["step_time_s"] for l in lines[1:]]
    return statistics.median(times), max(l["peak_bytes"] for l in lines), lines[-1]["loss"]


def predict(args, run):
    cmd = [args.weft, "plan", "--model", run["model"], "--ranks", str(run["ranks"]),
           "--seq-len", str(run["seq"]), "--global-batch", str(run["batch"]), "--json",
           "--mesh", run["mesh"]] + shlex.split(run["plan_flags"])
    if args.flops_per_core:
        cmd += ["--flops-per-core", str(args.flops_per_core)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[0])


def runs(dense, moe):
    """Every (study, dimension, ranks) run with its train flags and plan layout."""
    out = []
    def add(study, dim, ranks, model, batch, seq, mesh, flags, plan_flags=""):
        out.append({"study": study, "dim": dim, "ranks": ranks, "model": model, "batch": batch,
                    "seq": seq, "mesh": mesh, "flags": flags, "plan_flags": plan_flags})
    for r in (1, 2, 4, 8):
        add("strong", "dp", r, dense, 16, 256, f"dp={r}", "")
        add("strong", "tp", r, dense, 16, 256, f"tp={r}", f"--tp {r}")
        add("strong", "pp", r, dense, 16, 256, f"pp={r}", f"--pp {r} --micro-batch 1",
            "--micro-batch 1")
        add("strong", "sp", r, dense, 16, 256, f"sp={r}", f"--sp {r}")
        add("strong", "ep", r, moe, 16, 256, f"dp={r},ep={r}", f"--ep {r}")
        add("weak", "dp", r, dense, 4 * r, 256, f"dp={r}", "")
        add("weak", "pp", r, dense, 4 * r, 256, f"pp={r}", f"--pp {r} --micro-batch 1",
            "--micro-batch 1")
        add("weak", "sp", r, dense, 4, 128 * r, f"sp={r}", f"--sp {r}")
        add("weak", "ep", r, moe, 4 * r, 256, f"dp={r},ep={r}", f"--ep {r}")
    return out


def plot(results, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, study in zip(axes, ("strong", "weak")):
        for dim in ("dp", "tp", "pp", "sp", "ep"):
            rows = [r for r in results if r["study"] == study and r["dim"] == dim]
            if not rows:
                continue
            ranks = [r["ranks"] for r in rows]
            line, = ax.plot(ranks, [r["tokens_per_s"] for r in rows], "o-", label=f"{dim} measured")
            ax.plot(ranks, [r["predicted_tokens_per_s"] for r in rows], "x--", color=line.get_color(),
                    label=f"{dim} predicted")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks")
        ax.set_ylabel("tokens/s")
        ax.set_title(f"{study} scaling (this machine: {os.cpu_count()} cores)")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "scaling.png"), dpi=110)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, key, label in ((axes[0], "step_s", "step time (s)"),
                           (axes[1], "peak_mib", "peak memory per rank (MiB)")):
        xs = [r[f"predicted_{key}"] for r in results]
        ys = [r[key] for r in results]
        ax.scatter(xs, ys, s=14)
        top = max(xs + ys) * 1.05
        ax.plot([0, top], [0, top], "k:", linewidth=1)
        ax.set_xlabel(f"predicted {label}")
        ax.set_ylabel(f"measured {label}")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "predicted_vs_measured.png"), dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weft", required=True)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--flops-per-core", type=float, default=0,
                        help="pass to weft plan instead of its measurement")
    parser.add_argument("--only", default="", help="comma-separated dims to run (default all)")
    parser.add_argument("--repredict", action="store_true",
                        help="keep the measurements in --out/results.json, predict them again "
                             "(after a change to the cost model) and redraw")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="weft_scaling_")
    dense = write_model(os.path.join(work, "llama"))
    moe = write_model(os.path.join(work, "mixtral"), experts=8)
    if not args.flops_per_core:
        # One probe for every prediction (each `weft plan` would measure again, with its noise).
        out = subprocess.run([args.weft, "plan", "--model", dense, "--ranks", "1", "--seq-len",
                              "256", "--top", "1"], check=True, capture_output=True,
                             text=True).stdout
        gflops = float(re.search(r"([0-9.]+) GFLOP/s per core", out).group(1))
        args.flops_per_core = gflops * 1e9
    print(f"core speed for the predictions: {args.flops_per_core / 1e9:.1f} GFLOP/s",
          file=sys.stderr, flush=True)
    results = []
    only = set(filter(None, args.only.split(",")))
    measured = {}
    if args.repredict:
        with open(os.path.join(args.out, "results.json")) as f:
            measured = {(r["study"], r["dim"], r["ranks"]): r for r in json.load(f)}
    for run in runs(dense, moe):
        if only and run["dim"] not in only:
            continue
        if args.repredict:
            old = measured.get((run["study"], run["dim"], run["ranks"]))
            if old is None:
                continue
            step_s, peak, loss = old["step_s"], old["peak_mib"] * 2**20, old["loss"]
        else:
            step_s, peak, loss = measure(args, work, run)
        p = predict(args, run)
        row = {k: run[k] for k in ("study", "dim", "ranks", "batch", "seq", "mesh", "flags")}
        row.update({"step_s": step_s, "tokens_per_s": run["batch"] * run["seq"] / step_s,
                    "peak_mib": peak / 2**20, "loss": loss,
                    "predicted_step_s": p["step_s"], "predicted_tokens_per_s": p["tokens_per_s"],
                    "predicted_peak_mib": p["peak_bytes"] / 2**20})
        results.append(row)
        print(f"{row['study']:6} {row['dim']} {row['ranks']} ranks: {step_s:.3f} s/step "
              f"(predicted {p['step_s']:.3f}), peak {row['peak_mib']:.1f} MiB "
              f"(predicted {row['predicted_peak_mib']:.1f})", file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, args.out)
    for study in ("strong", "weak"):
        print(f"\n{study} scaling: median step time (s), tokens/s, peak MiB of rank 0; "
              "predicted in brackets\n")
        print("| dim | ranks | global batch x seq | step s (pred.) | tokens/s (pred.) | "
              "peak MiB (pred.) |")
        print("| --- | ---: | --- | --- | --- | --- |")
        for r in results:
            if r["study"] != study:
                continue
            print(f"| {r['dim']} | {r['ranks']} | {r['batch']} x {r['seq']} | {r['step_s']:.3f} "
                  f"({r['predicted_step_s']:.3f}) | {r['tokens_per_s']:.0f} "
                  f"({r['predicted_tokens_per_s']:.0f}) | {r['peak_mib']:.1f} "
                  f"({r['predicted_peak_mib']:.1f}) |")
    def err(key):
        es = [abs(r[f"predicted_{key}"] - r[key]) / r[key] for r in results]
        return statistics.median(es), max(es)
    for key, name in (("step_s", "step time"), ("peak_mib", "peak memory")):
        med, worst = err(key)
        print(f"\n{name}: median relative error of the prediction {med:.0%}, worst {worst:.0%}")


if __name__ == "__main__":
    main()
