"""Plots bench/serve_bench.sh's rate sweep: goodput and p90 TTFT against the request rate, for
--scheduler continuous and static. Usage: python3 bench/serve_plot.py RESULTS_DIR OUT.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(results_dir, out):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for scheduler, style in (("continuous", "o-"), ("static", "s--")):
        runs = load(f"{results_dir}/sweep_{scheduler}.jsonl")
        rates = [r["rate"] for r in runs]
        ax1.plot(rates, [r["goodput"] for r in runs], style, label=scheduler)
        ax2.plot(rates, [r["ttft_s"]["p90"] for r in runs], style, label=scheduler)
    slo = runs[0]["slo"]
    lim = max(rates)
    ax1.plot([0, lim], [0, lim], ":", color="gray", label="every request within SLO")
    ax1.set(xlabel="request rate (req/s)", ylabel="goodput (req/s)",
            title=f"goodput (TTFT <= {slo['ttft_s']} s, TPOT <= {slo['tpot_s']} s)")
    ax2.set(xlabel="request rate (req/s)", ylabel="p90 TTFT (s)", yscale="log", title="p90 time to first token")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("weft serve, bench Llama (5.3M params), 2-core CPU: continuous (chunked prefill) vs static batching")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
