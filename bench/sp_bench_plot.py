#!/usr/bin/python3
"""Runs bench/sp_layer_bench.cc at several sp degrees, plots time and bytes against the sequence
length per algorithm, and prints markdown tables (for bench/RESULTS.md).

    /usr/bin/python3 bench/sp_bench_plot.py --bench build/bench/sp_layer_bench \
        [--ranks 2,4] [--seq 256,512,1024,2048,4096,8192] [--repeats 5] \
        [--png bench/sp_layer_bench.png] [--jsonl /tmp/sp_layer_bench.jsonl]
    /usr/bin/python3 bench/sp_bench_plot.py --from-jsonl /tmp/sp_layer_bench.jsonl  # re-plot

Needs Debian's python3-matplotlib (apt-get install -y python3-matplotlib).
"""
import argparse
import json
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SOFTMAX = ["ring", "ulysses", "usp", "allgather"]
LINEAR = ["lasp2", "zeco"]
AUTO_SOFTMAX = ["ring", "ulysses", "allgather"]  # the auto core's candidates
TIE = 0.05  # measured times within 5% are a tie on this shared 2-core machine


def run(bench, ranks, seq, repeats):
    cmd = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), bench,
           "--seq", seq, "--repeats", str(repeats)]
    print("running:", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def index(rows, kind):
    """(P, layout, T, algo) -> row."""
    return {(r["P"], r["layout"], r["T"], r["algo"]): r for r in rows if r["kind"] == kind}


COLORS = {"ring": "tab:blue", "ulysses": "tab:orange", "usp": "tab:green",
          "allgather": "tab:red", "lasp2": "tab:blue", "zeco": "tab:orange"}
MARKERS = {"ring": "o", "ulysses": "s", "usp": "^", "allgather": "d", "lasp2": "o", "zeco": "s"}


def time_panel(ax, data, p, algos, layouts, title, dashed=None):
    """Each algorithm's time over the fastest one's at the same T (1 = the winner); lines of the
    `dashed` layout dashed."""
    seqs = sorted({t for (pp, _, t, _) in data if pp == p})
    best = {t: min(r["time_s"] for (pp, _, tt, a), r in data.items()
                   if pp == p and tt == t and a != "auto") for t in seqs}
    for algo in algos + ["auto"]:
        for layout in layouts:
            pts = sorted((t, r["time_s"] / best[t]) for (pp, lay, t, a), r in data.items()
                         if pp == p and lay == layout and a == algo)
            if not pts:
                continue
            label = algo + (f" ({layout})" if dashed else "")
            if algo == "auto":
                label += " [" + ", ".join(data[(p, layout, t, "auto")]["pick"][0] for t, _ in pts)
                label += "]"
                ax.plot([t for t, _ in pts], [y for _, y in pts], "x",
                        color="black" if layout == layouts[0] else "gray", markersize=9,
                        label=label)
            else:
                ax.plot([t for t, _ in pts], [y for _, y in pts], marker=MARKERS[algo],
                        color=COLORS[algo], linestyle="--" if layout == dashed else "-",
                        label=label)
    ax.axhline(1.0, color="black", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("fwd + bwd time / fastest at this T" + (" (both layouts)" if dashed else ""))
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def bytes_panel(ax, data, ranks, algos, layout_of, title):
    for p, ls in zip(ranks, ["-", "--", ":"]):
        for algo in algos:
            pts = sorted((t, r["bytes"]) for (pp, lay, t, a), r in data.items()
                         if pp == p and a == algo and lay == layout_of(algo))
            if pts:
                ax.plot([t for t, _ in pts], [b / 2**20 for _, b in pts], marker=MARKERS[algo],
                        color=COLORS[algo], linestyle=ls, label=f"{algo} P={p}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("MiB sent per rank (forward + backward)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)


def plot(rows, ranks, png):
    soft, lin = index(rows, "softmax"), index(rows, "linear")
    fig, axes = plt.subplots(2, len(ranks) + 1, figsize=(5.5 * (len(ranks) + 1), 9))
    for col, p in enumerate(ranks):
        note = " (4 ranks on 2 cores)" if p > 2 else ""
        time_panel(axes[0][col], soft, p, SOFTMAX, ["zigzag", "zigzag-ring"],
                   f"softmax attention, P = {p}{note}\nauto's picks: r/u/a = ring/ulysses/allgather")
        time_panel(axes[1][col], lin, p, LINEAR, ["contiguous", "zigzag"],
                   f"linear attention, P = {p}{note}\nauto's picks: z/l = zeco/lasp2", "zigzag")
    bytes_panel(axes[0][len(ranks)], soft, ranks, SOFTMAX,
                lambda a: "zigzag-ring" if a == "usp" else "zigzag", "softmax attention: bytes")
    bytes_panel(axes[1][len(ranks)], lin, ranks, LINEAR, lambda a: "zigzag",
                "linear attention: bytes (zigzag layout)")
    fig.tight_layout()
    fig.savefig(png, dpi=100)


def fmt_ms(s):
    return f"{s * 1e3:.1f}" if s >= 0.01 else f"{s * 1e3:.2f}"


def softmax_tables(rows, ranks):
    soft = index(rows, "softmax")
    whatif = {(r["P"], r["T"], r["beta_scale"]): r["pick"] for r in rows if r["kind"] == "whatif"}
    seqs = sorted({t for (_, _, t, _) in soft})
    print("| P | T | ring (ms) | ulysses (ms) | usp (ms) | allgather (ms) | auto (ms) | auto picked "
          "| measured best of auto's | pick / best |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    hits = ties = cells = 0
    for p in ranks:
        for t in seqs:
            get = lambda a: soft.get((p, "zigzag-ring" if a == "usp" else "zigzag", t, a))
            auto = get("auto")
            times = {a: get(a)["time_s"] for a in AUTO_SOFTMAX if get(a)}
            best = min(times, key=times.get)
            ratio = times[auto["pick"]] / times[best]
            cells += 1
            hits += auto["pick"] == best
            ties += auto["pick"] != best and ratio <= 1 + TIE
            cols = [fmt_ms(get(a)["time_s"]) if get(a) else "-" for a in SOFTMAX]
            print(f"| {p} | {t} | " + " | ".join(cols) +
                  f" | {fmt_ms(auto['time_s'])} | {auto['pick']} | {best} | {ratio:.2f} |")
    print(f"\nauto picked the measured best in {hits} of {cells} cells; in {ties} more its pick was "
          f"within {int(TIE * 100)}% of the best (a tie on this machine).\n")
    print("| P | T | ring (MiB) | ulysses (MiB) | usp (MiB) | allgather (MiB) | model's pick at "
          "beta x10 / x100 / x1000 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for p in ranks:
        for t in seqs:
            get = lambda a: soft.get((p, "zigzag-ring" if a == "usp" else "zigzag", t, a))
            cols = [f"{get(a)['bytes'] / 2**20:.2f}" if get(a) else "-" for a in SOFTMAX]
            picks = " / ".join(whatif.get((p, t, s), "-") for s in (10, 100, 1000))
            print(f"| {p} | {t} | " + " | ".join(cols) + f" | {picks} |")


def linear_table(rows, ranks):
    lin = index(rows, "linear")
    seqs = sorted({t for (_, _, t, _) in lin})
    print("\n| layout | P | T | lasp2 (ms) | zeco (ms) | auto (ms) | auto picked | measured best "
          "| pick / best | lasp2 (KiB) | zeco (KiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    hits = ties = cells = 0
    for layout in ["contiguous", "zigzag"]:
        for p in ranks:
            for t in seqs:
                get = lambda a: lin[(p, layout, t, a)]
                best = min(LINEAR, key=lambda a: get(a)["time_s"])
                ratio = get(get("auto")["pick"])["time_s"] / get(best)["time_s"]
                cells += 1
                hits += get("auto")["pick"] == best
                ties += get("auto")["pick"] != best and ratio <= 1 + TIE
                print(f"| {layout} | {p} | {t} | {fmt_ms(get('lasp2')['time_s'])} | "
                      f"{fmt_ms(get('zeco')['time_s'])} | {fmt_ms(get('auto')['time_s'])} | "
                      f"{get('auto')['pick']} | {best} | {ratio:.2f} | "
                      f"{get('lasp2')['bytes'] / 1024:.0f} | {get('zeco')['bytes'] / 1024:.0f} |")
    print(f"\nauto picked the measured best in {hits} of {cells} cells; in {ties} more its pick was "
          f"within {int(TIE * 100)}% of the best.")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="build/bench/sp_layer_bench")
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--seq", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--png", default="bench/sp_layer_bench.png")
    ap.add_argument("--jsonl", default="", help="also write the raw JSON lines here")
    ap.add_argument("--from-jsonl", default="", help="tables and plot from a saved run instead")
    args = ap.parse_args()
    ranks = [int(p) for p in args.ranks.split(",")]
    rows = []
    if args.from_jsonl:
        with open(args.from_jsonl) as f:
            rows = [json.loads(line) for line in f]
    for p in ranks if not args.from_jsonl else []:
        rows += run(args.bench, p, args.seq, args.repeats)
    if args.jsonl:
        with open(args.jsonl, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    for r in rows:
        if r["kind"] == "costs":
            print(f"P={r['P']}: alpha {r['alpha']:.2e} s/message, beta {r['beta']:.2e} s/byte, "
                  f"gamma {r['gamma']:.2e} s/flop\n")
    softmax_tables(rows, ranks)
    linear_table(rows, ranks)
    plot(rows, ranks, args.png)
    print(f"\nwrote {args.png}", file=sys.stderr)


if __name__ == "__main__":
    main()
