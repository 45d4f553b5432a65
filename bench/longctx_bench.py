#!/usr/bin/python3
"""Longest trainable sequence within a memory budget: weft's memory savers against PyTorch.

Issue 13 (long-context training memory savers). For one rank and one thread, two models of the
same size (the 4-layer Llama of bench/RESULTS.md "Long-context memory savers": vocabulary 32000,
hidden 256, 8 heads / 4 KV heads, MLP 768, untied; and a hybrid whose layers alternate softmax
and weft's decayed linear attention), and for each mode

  weft: none, --recompute selective, --recompute full, --streambp C, --streambp C --recompute
        full, --seco C (a flag that `weft train --help` does not list is reported unavailable)
  torch: tests/fixtures/reference_model.py in plain autograd, and with torch.utils.checkpoint
        around each decoder layer (Debian's python3-torch, CPU)

the script finds the longest sequence T (batch 1, multiples of --step; doubling, then bisecting,
up to --max-seq) whose training run of 2 AdamW steps keeps the peak resident set of its process
within --budget-mb MiB. Every trial is a fresh child process under /usr/bin/time (its %M is the
peak RSS); the parent also polls the child's RSS and kills it once it passes the budget, or when
the trial runs longer than --trial-timeout seconds. At the longest T it reports the second
step's time (weft: `step_time_s` of its metrics; torch: forward, backward and optimizer step)
and weft's own `peak_bytes` (tensor bytes live at the step's peak). It prints a table and the
ratios the issue targets (StreamBP's longest T over full recomputation's, at least 6x; its step
time over full recomputation's at their own lengths, at most 1.3x), and writes OUT.json and
OUT.png (--out).

  /usr/bin/python3 bench/longctx_bench.py --weft build/weft [--budget-mb 1024] [--quick]
      [--mmap-threshold 0] [--models llama,hybrid] [--engines weft,torch]

The reference model computes attention naively: softmax attention materializes the [T, T]
probabilities per head, linear attention the [H, T, T] decay matrix (weft's kernels never do),
and the torch process itself (python, torch, OpenBLAS) holds ~230 MiB before any tensor (the
JSON records it: `torch_baseline_mib`). So does a CUDA build of weft (~225 MiB at `weft train
--help`, about half of it libcublasLt's pages); a CPU-only build starts smaller.

A full run (1024 MiB, T up to 32768) takes roughly an hour, most of it in the longest trials
(softmax attention costs T^2: ~75 s per step at T = 16384 on one core); --quick takes minutes.

Peak RSS is not weft's `peak_bytes`: weft allocates with aligned_alloc, and under glibc's
dynamic mmap threshold freed blocks stay in its heaps depending on timing, so two identical weft
runs can differ by ~200 MiB of peak RSS, and a longer T can show a lower peak than a shorter
one. The search therefore runs every child (weft and torch) with a fixed threshold
(MALLOC_MMAP_THRESHOLD_, --mmap-threshold, default 131072: glibc's starting value), which makes
peak RSS reproducible but maps every large block afresh (slower steps); the step time reported
is then that of one more run at the longest T under glibc's own threshold (--no-retime: keep the
search's). --mmap-threshold 0 searches under glibc's own threshold.
"""

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20
STEPS = 2  # the second step is the one timed

BASE = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=32000,
            hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, head_dim=32, rms_norm_eps=1e-5, rope_theta=10000.0,
            tie_word_embeddings=False, hidden_act="silu")
MODELS = {
    "llama": dict(BASE),
    "hybrid": dict(BASE, layer_types=["full_attention", "linear_attention"] * 2),
}


def weft_modes(chunk):
    """(name, weft train flags)."""
    c = str(chunk)
    return [("none", []), ("recompute selective", ["--recompute", "selective"]),
            ("recompute full", ["--recompute", "full"]), (f"streambp {c}", ["--streambp", c]),
            (f"streambp {c} + recompute full", ["--streambp", c, "--recompute", "full"]),
            (f"seco {c}", ["--seco", c])]


TORCH_MODES = [("torch autograd", "plain"), ("torch checkpoint", "checkpoint")]


# ---------------------------------------------------------------- the torch child process


def torch_trial(spec_path):
    """Runs in a child process: STEPS AdamW steps of the reference model, results to spec["out"]."""
    with open(spec_path) as f:
        spec = json.load(f)
    import torch
    from torch.utils.checkpoint import checkpoint
    sys.path.insert(0, os.path.join(ROOT, "tests", "fixtures"))
    import reference_model as ref

    torch.set_num_threads(1)
    baseline_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = spec["config"]
    with open(spec["tokens"]) as f:
        tokens = torch.tensor([[int(t) for t in line.split()] for line in f if line.strip()])
    gen = torch.Generator().manual_seed(0)
    leaves = {}
    for name, shape in ref.param_shapes(cfg).items():
        noise = torch.randn(shape, generator=gen)
        value = 1 + 0.1 * noise if name.endswith("norm.weight") else 0.02 * noise
        leaves[name] = value.requires_grad_()
    groups = [
        {"params": [p for p in leaves.values() if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in leaves.values() if p.dim() < 2], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    eps = cfg["rms_norm_eps"]
    layer_types = cfg.get("layer_types") or ["full_attention"] * cfg["num_hidden_layers"]

    def layer(x, pre, layer_type):  # one decoder layer, as ref.forward writes it
        h = ref.rms_norm(x, leaves[pre + "input_layernorm.weight"], eps)
        x = x + ref.attention(cfg, leaves, pre + "self_attn.", h, layer_type)
        h = ref.rms_norm(x, leaves[pre + "post_attention_layernorm.weight"], eps)
        return x + ref.mlp(leaves, pre + "mlp.", h)

    def forward(batch):
        x = leaves["model.embed_tokens.weight"][batch]
        for i, layer_type in enumerate(layer_types):
            if spec["mode"] == "checkpoint":
                x = checkpoint(layer, x, f"model.layers.{i}.", layer_type, use_reentrant=False)
            else:
                x = layer(x, f"model.layers.{i}.", layer_type)
        x = ref.rms_norm(x, leaves["model.norm.weight"], eps)
        return x @ leaves["lm_head.weight"].T

    times, losses = [], []
    for step in range(STEPS):
        batch = tokens[step % len(tokens)][None]
        start = time.perf_counter()
        loss = ref.next_token_loss(forward(batch), batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    with open(spec["out"], "w") as f:
        json.dump(dict(step_times_s=times, losses=losses, baseline_mib=baseline_mib,
                       torch_version=torch.__version__), f)


# ---------------------------------------------------------------- trials in child processes


def wait_quiet(path):
    """Someone needs a quiet machine while PATH exists: no trial starts then."""
    if path and os.path.exists(path):
        print(f"  waiting: {path} exists", flush=True)
        while os.path.exists(path):
            time.sleep(5)


def descendants_rss_mib(pid):
    """Resident set of PID's descendants (the measured process under /usr/bin/time)."""
    total, todo = 0, []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            todo = [int(c) for c in f.read().split()]
    except OSError:
        return 0.0
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total * PAGE_MIB


def run_child(cmd, env, workdir, budget_mib, timeout_s):
    """Runs CMD under /usr/bin/time. -> dict(status, peak_rss_mib, wall_s, stderr).

    status: "ok", "memory" (killed above the budget, or ended above it), "time" (killed after
    timeout_s) or "error" (a non-zero exit)."""
    rss_file = os.path.join(workdir, "maxrss.txt")
    out_path, err_path = os.path.join(workdir, "stdout.txt"), os.path.join(workdir, "stderr.txt")
    start = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, env=env,
                                stdout=out, stderr=err, start_new_session=True)
        polled, killed = 0.0, None
        while proc.poll() is None:
            polled = max(polled, descendants_rss_mib(proc.pid))
            if polled > budget_mib:
                killed = "memory"
            elif time.monotonic() - start > timeout_s:
                killed = "time"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.02)
    wall = time.monotonic() - start
    with open(err_path) as f:
        stderr = f.read()
    peak = polled
    if killed is None and os.path.exists(rss_file):
        with open(rss_file) as f:
            lines = f.read().strip().splitlines()
        if lines and lines[-1].isdigit():
            peak = max(peak, int(lines[-1]) / 1024)
    if killed:
        status = killed
    elif proc.returncode != 0:
        status = "error"
    else:
        status = "memory" if peak > budget_mib else "ok"
    return dict(status=status, peak_rss_mib=round(peak, 1), wall_s=round(wall, 2),
                stderr=stderr[-2000:])


def malloc_env(threshold):
    """A fixed glibc mmap threshold for a child (0: glibc's own, dynamic)."""
    return {"MALLOC_MMAP_THRESHOLD_": str(threshold)} if threshold else {}


def write_trial_inputs(workdir, cfg, seq_len):
    """config.json (max_position_embeddings = seq_len) and STEPS random sequences of seq_len."""
    model_dir = os.path.join(workdir, "model")
    os.makedirs(model_dir, exist_ok=True)
    cfg = dict(cfg, max_position_embeddings=seq_len)
    with open(os.path.join(model_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    rng = random.Random(seq_len)
    tokens = os.path.join(workdir, "tokens.txt")
    with open(tokens, "w") as f:
        for _ in range(STEPS):
            f.write(" ".join(str(rng.randrange(cfg["vocab_size"])) for _ in range(seq_len)) + "\n")
    return cfg, model_dir, tokens


def weft_trial(args, cfg, flags, seq_len, workdir, threshold, budget_mib):
    cfg, model_dir, tokens = write_trial_inputs(workdir, cfg, seq_len)
    metrics = os.path.join(workdir, "metrics.jsonl")
    cmd = [args.weft, "train", "--model", model_dir, "--init-random", "--data", tokens,
           "--steps", str(STEPS), "--global-batch", "1", "--seq-len", str(seq_len), "--lr", "1e-3",
           "--weight-decay", "0.1", "--metrics", metrics, "--log-every", str(STEPS)] + flags
    env = dict(os.environ, WEFT_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               **malloc_env(threshold))
    r = run_child(cmd, env, workdir, budget_mib, args.trial_timeout)
    if r["status"] == "error" and "unknown flag" in r["stderr"]:
        r["status"] = "unavailable"
    rows = []
    if os.path.exists(metrics):
        with open(metrics) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    if r["status"] == "ok" and len(rows) < STEPS:
        r["status"] = "error"
    if rows:
        r["step_time_s"] = rows[-1]["step_time_s"]
        r["peak_bytes"] = max(row["peak_bytes"] for row in rows)
        r["losses"] = [row["loss"] for row in rows]
    return r


def torch_trial_parent(args, cfg, mode, seq_len, workdir, threshold, budget_mib):
    cfg, _, tokens = write_trial_inputs(workdir, cfg, seq_len)
    spec = dict(config=cfg, tokens=tokens, mode=mode, out=os.path.join(workdir, "torch.json"))
    spec_path = os.path.join(workdir, "spec.json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               **malloc_env(threshold))
    cmd = [sys.executable, os.path.abspath(__file__), "--torch-trial", spec_path]
    r = run_child(cmd, env, workdir, budget_mib, args.trial_timeout)
    if os.path.exists(spec["out"]):
        with open(spec["out"]) as f:
            got = json.load(f)
        r["step_time_s"] = got["step_times_s"][-1]
        r["losses"] = got["losses"]
        r["torch_baseline_mib"] = round(got["baseline_mib"], 1)
        r["torch_version"] = got["torch_version"]
    elif r["status"] == "ok":
        r["status"] = "error"
    return r


def search(trial, step, cap, label):
    """Longest T (a multiple of step, <= cap) with trial(T)["status"] == "ok".

    Doubles from step, then bisects between the longest that fits and the shortest that does
    not. -> (best trial or None, first failing trial or None, all trials)."""
    trials = []

    def run(seq_len):
        r = dict(seq_len=seq_len, **trial(seq_len))
        trials.append(r)
        extra = f" step {r['step_time_s']:.2f} s" if "step_time_s" in r else ""
        print(f"  {label:42} T={seq_len:6d} {r['status']:11} peak RSS {r['peak_rss_mib']:7.0f} "
              f"MiB, {r['wall_s']:6.1f} s wall{extra}", flush=True)
        return r

    good, bad, seq_len = None, None, step
    while True:
        r = run(seq_len)
        if r["status"] != "ok":
            bad = r
            break
        good = r
        if seq_len >= cap:
            break
        seq_len = min(2 * seq_len, cap)
    if bad is not None and bad["status"] in ("unavailable", "error"):
        return good, bad, trials  # a mode that does not run is not bisected
    lo = good["seq_len"] if good else 0
    while bad is not None and bad["seq_len"] - lo > step:
        mid = (lo + bad["seq_len"]) // 2 // step * step
        r = run(mid)
        if r["status"] == "ok":
            good, lo = r, mid
        else:
            bad = r
    return good, bad, trials


def measure(args, workroot, model, engine, mode, flags_or_kind, weft_help):
    """One (model, engine, mode): its search and the summary row."""
    cfg = MODELS[model]
    row = dict(model=model, engine=engine, mode=mode, longest_seq=0, limit=None)
    if engine == "weft":
        row["flags"] = flags_or_kind
        missing = [f for f in flags_or_kind if f.startswith("--") and f not in weft_help]
        if missing:
            print(f"  {model + ' / ' + mode:42} unavailable: weft train has no {' '.join(missing)}")
            return dict(row, limit="unavailable", trials=[])
    counter = [0]

    def trial(seq_len, threshold=args.mmap_threshold, budget_mib=args.budget_mb):
        wait_quiet(args.quiet_file)
        counter[0] += 1
        workdir = os.path.join(workroot, f"{model}-{mode.replace(' ', '_')}-{counter[0]}")
        os.makedirs(workdir)
        run = weft_trial if engine == "weft" else torch_trial_parent
        return run(args, cfg, flags_or_kind, seq_len, workdir, threshold, budget_mib)

    good, bad, trials = search(trial, args.step, args.max_seq, f"{model} / {mode}")
    row["trials"] = trials
    if bad is None:
        row["limit"] = "max-seq"
    else:
        row["limit"] = bad["status"]
        if bad["status"] in ("error", "unavailable"):
            row["error"] = bad["stderr"].strip().splitlines()[-1:] if bad["stderr"] else []
    if good is not None:
        row["longest_seq"] = good["seq_len"]
        for key in ("peak_rss_mib", "step_time_s", "peak_bytes", "torch_baseline_mib"):
            if key in good:
                row[key] = good[key]
        if args.mmap_threshold and args.retime and "step_time_s" in good:
            # The step time as glibc's own malloc gives it, at the same T (memory not judged:
            # only a run past twice the budget is stopped).
            again = trial(good["seq_len"], threshold=0, budget_mib=2 * args.budget_mb)
            print(f"  {model + ' / ' + mode:42} T={good['seq_len']:6d} retimed with glibc's "
                  f"dynamic mmap threshold: {again['status']}, peak RSS "
                  f"{again['peak_rss_mib']:.0f} MiB, step {again.get('step_time_s', 0):.2f} s")
            row["fixed_mmap_step_time_s"] = good["step_time_s"]
            row["retime"] = {k: again[k] for k in ("status", "peak_rss_mib", "step_time_s")
                             if k in again}
            if again["status"] == "ok":
                row["step_time_s"] = again["step_time_s"]
        if "step_time_s" in row:
            row["tokens_per_s"] = round(good["seq_len"] / row["step_time_s"], 1)
    return row


# ---------------------------------------------------------------- report


def find(rows, model, mode):
    return next((r for r in rows if r["model"] == model and r["mode"] == mode), None)


def ratios(rows, chunk):
    """StreamBP (alone, and with full recomputation) against full recomputation, per model."""
    out = []
    for model in MODELS:
        full = find(rows, model, "recompute full")
        for mode in (f"streambp {chunk}", f"streambp {chunk} + recompute full"):
            sb = find(rows, model, mode)
            if not full or not sb or not full["longest_seq"] or not sb["longest_seq"]:
                continue
            entry = dict(model=model, mode=mode, seq_ratio=sb["longest_seq"] / full["longest_seq"],
                         seq_ratio_is_lower_bound=sb["limit"] != "memory")
            if "step_time_s" in sb and "step_time_s" in full:
                entry["step_time_ratio"] = sb["step_time_s"] / full["step_time_s"]
                entry["per_token_time_ratio"] = full["tokens_per_s"] / sb["tokens_per_s"]
            out.append(entry)
    return out


def print_report(rows, rat, args):
    print(f"\nlongest T within {args.budget_mb} MiB peak RSS (batch 1, one thread, T a multiple "
          f"of {args.step}, at most {args.max_seq}; limit: what stopped the search)")
    print(f"{'model':7} {'mode':32} {'longest T':>9} {'limit':>11} {'peak RSS':>9} "
          f"{'weft peak':>10} {'step (s)':>9} {'tokens/s':>9}")
    for r in rows:
        weft_peak = f"{r['peak_bytes'] / 2**20:.0f}" if "peak_bytes" in r else "-"
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else "-"
        step = f"{r['step_time_s']:.3f}" if "step_time_s" in r else "-"
        tps = f"{r['tokens_per_s']:.0f}" if "tokens_per_s" in r else "-"
        print(f"{r['model']:7} {r['mode']:32} {r['longest_seq']:9d} {r['limit']:>11} {rss:>9} "
              f"{weft_peak:>10} {step:>9} {tps:>9}")
    print("(peak RSS and weft peak in MiB: the process's resident set; weft's live tensor bytes."
          " step: the second step's time" + (", timed again under glibc's dynamic mmap threshold)"
                                            if args.mmap_threshold and args.retime else ")"))
    print("\nStreamBP against full recomputation at equal memory (targets: longest T >= 6x, step "
          "time <= 1.3x)")
    for e in rat:
        bound = " (lower bound: not stopped by memory)" if e["seq_ratio_is_lower_bound"] else ""
        line = f"  {e['model']:7} {e['mode']:32} longest T {e['seq_ratio']:5.2f}x{bound}"
        if "step_time_ratio" in e:
            line += (f", step time {e['step_time_ratio']:5.2f}x (per token "
                     f"{e['per_token_time_ratio']:.2f}x)")
        print(line)


def plot(rows, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(dict.fromkeys(r["mode"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    width = 0.8 / max(1, len(models))
    for k, model in enumerate(models):
        xs, seqs, steps = [], [], []
        for i, mode in enumerate(modes):
            r = find(rows, model, mode)
            xs.append(i + (k - (len(models) - 1) / 2) * width)
            seqs.append(r["longest_seq"] if r else 0)
            steps.append(r.get("step_time_s", 0) if r else 0)
        bars = axes[0].bar(xs, seqs, width, label=model)
        axes[1].bar(xs, steps, width, label=model)
        for x, mode in zip(xs, modes):
            r = find(rows, model, mode)
            if r and r["limit"] in ("unavailable", "error"):
                axes[0].text(x, 0, r["limit"], rotation=90, ha="center", va="bottom", fontsize=7)
        axes[0].bar_label(bars, labels=[str(v) if v else "" for v in seqs], fontsize=7)
    axes[0].set_ylabel("longest sequence (tokens)")
    axes[0].set_title(f"longest T within {args.budget_mb} MiB peak RSS (cap {args.max_seq})")
    axes[1].set_ylabel("second step time (s) at that T")
    axes[1].set_title("step time at the longest T")
    for ax in axes:
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(modes, rotation=30, ha="right", fontsize=8)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--torch-trial":
        torch_trial(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weft", default=os.path.join(ROOT, "build", "weft"))
    ap.add_argument("--budget-mb", type=float, default=1024, help="peak RSS budget (MiB)")
    ap.add_argument("--max-seq", type=int, default=32768, help="longest T tried")
    ap.add_argument("--step", type=int, default=256, help="T is a multiple of this")
    ap.add_argument("--chunk", type=int, default=256, help="--streambp / --seco chunk")
    ap.add_argument("--trial-timeout", type=float, default=1200,
                    help="seconds per trial (2 steps); a slower trial counts as not fitting")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: llama,hybrid")
    ap.add_argument("--engines", default="weft,torch", help="comma-separated: weft,torch")
    ap.add_argument("--mmap-threshold", type=int, default=131072,
                    help="bytes: MALLOC_MMAP_THRESHOLD_ of every child in the search (a fixed "
                    "threshold makes peak RSS reproducible); 0: glibc's dynamic threshold")
    ap.add_argument("--no-retime", dest="retime", action="store_false",
                    help="report the step time of the search's trial (fixed mmap threshold) "
                    "instead of timing the longest T again under glibc's dynamic threshold")
    ap.add_argument("--quick", action="store_true",
                    help="a short check: --budget-mb 800 --max-seq 4096 --trial-timeout 60")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "longctx_bench"),
                    help="writes OUT.json and OUT.png")
    ap.add_argument("--quiet-file", default="/tmp/weft-quiet",
                    help="no trial starts while this file exists")
    args = ap.parse_args()
    if args.quick:
        args.budget_mb, args.max_seq, args.trial_timeout = 800, 4096, 60
    models = [m for m in args.models.split(",") if m]
    engines = [e for e in args.engines.split(",") if e]
    for m in models:
        if m not in MODELS:
            sys.exit(f"unknown model {m} (choose from {', '.join(MODELS)})")
    weft_help = ""
    if "weft" in engines:
        done = subprocess.run([args.weft, "train", "--help"], capture_output=True, text=True)
        weft_help = done.stdout + done.stderr
        if "--recompute" not in weft_help:
            sys.exit(f"{args.weft} train --help does not list --recompute:\n{weft_help}")
    plan = []
    for model in models:
        if "weft" in engines:
            plan += [(model, "weft", mode, flags) for mode, flags in weft_modes(args.chunk)]
        if "torch" in engines:
            plan += [(model, "torch", mode, kind) for mode, kind in TORCH_MODES]
    start = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="longctx-") as workroot:
        for model, engine, mode, what in plan:
            rows.append(measure(args, workroot, model, engine, mode, what, weft_help))
    elapsed = time.monotonic() - start
    rat = ratios(rows, args.chunk)
    print_report(rows, rat, args)
    print(f"\n{sum(len(r['trials']) for r in rows)} trials in {elapsed / 60:.1f} min")
    settings = dict(budget_mib=args.budget_mb, max_seq=args.max_seq, step=args.step,
                    chunk=args.chunk, trial_timeout_s=args.trial_timeout, batch=1, threads=1,
                    mmap_threshold=args.mmap_threshold or "glibc dynamic",
                    retimed=bool(args.mmap_threshold and args.retime),
                    train_steps=STEPS, weft=os.path.abspath(args.weft), models=MODELS,
                    elapsed_s=round(elapsed, 1), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(dict(settings=settings, results=rows, streambp_vs_full=rat), f, indent=1)
    plot(rows, args, args.out + ".png")
    print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
