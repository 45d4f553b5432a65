#!/usr/bin/env bash
# Disaggregated against colocated serving on the same 2 ranks (docs/serving.md "Disaggregated
# prefill and decode"), the bench Llama of bench/serve_bench.sh (vocab 4096, hidden 256, 4
# layers, 8 heads / 4 KV heads), one BLAS thread per rank:
#   colocated      weft serve --tp 2                                  (both phases on both ranks)
#   disaggregated  weft serve --prefill-ranks 1 --decode-ranks 1      (one rank each)
#   disagg-local   the same with --disagg-local-prefill 64: the router sends the short prompts
#                  straight to the decode rank, which prefills them itself
# The trace mixes two populations, each a seeded Poisson stream at half the rate: long prompts
# with short answers (768-1024 tokens in, 8-16 out) and short prompts with long answers (16-64
# in, 128-192 out). Goodput: completed requests per second that meet TTFT <= 3 s and TPOT <=
# 50 ms, summed over the two streams, at each total rate.
# Results: $OUT/disagg.jsonl. Usage: bash bench/disagg_bench.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
weft_build weft
cd "$WEFT_ROOT"
OUT="${WEFT_BENCH_OUT:-/tmp/weft-disagg-bench}"
MODEL="$OUT/llama-small"
mkdir -p "$OUT"
rm -f "$OUT"/disagg.jsonl
bench_llama "$MODEL"
RATES="${WEFT_DISAGG_RATES:-2 4 6 8 12}"
PER_STREAM="${WEFT_DISAGG_REQUESTS:-24}"

for mode in ${WEFT_DISAGG_MODES:-colocated disaggregated disagg-local}; do
  case $mode in
    colocated) flags=(--tp 2) ;;
    disaggregated) flags=(--prefill-ranks 1 --decode-ranks 1) ;;
    disagg-local) flags=(--prefill-ranks 1 --decode-ranks 1 --disagg-local-prefill 64) ;;
  esac
  serve_ranks 2 -- "${flags[@]}"
  for rate in $RATES; do
    half=$(/usr/bin/python3 -c "print($rate / 2)")
    # Fresh prompts at each rate (seeded by it): the prefix cache must not serve them.
    seed=$(/usr/bin/python3 -c "print(int($rate * 100))")
    common=(--url "$URL" --model small --vocab 4096 --rate "$half" --requests "$PER_STREAM"
      --slo-ttft 3 --slo-tpot 0.05)
    node bench/serve_load.mjs "${common[@]}" --input 768:1024 --output 8:16 --seed "$((seed + 1))" >"$OUT/a.json" &
    a=$!
    node bench/serve_load.mjs "${common[@]}" --input 16:64 --output 128:192 --seed "$((seed + 2))" >"$OUT/b.json"
    wait "$a"
    /usr/bin/python3 - "$mode" "$rate" "$OUT/a.json" "$OUT/b.json" >>"$OUT/disagg.jsonl" <<'PY'
import json, sys
mode, rate, a, b = sys.argv[1], float(sys.argv[2]), json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
print(json.dumps({"mode": mode, "rate": rate,
                  "goodput": a["goodput"] + b["goodput"],
                  "long_prompt": {k: a[k] for k in ("goodput", "slo_attainment", "ttft_s", "tpot_s")},
                  "long_answer": {k: b[k] for k in ("goodput", "slo_attainment", "ttft_s", "tpot_s")}}))
PY
    tail -1 "$OUT/disagg.jsonl"
  done
  stop_ranks
done
/usr/bin/python3 - "$OUT/disagg.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["mode"], {})[r["rate"]] = r
others = [m for m in by if m != "colocated"]
print("rate  colocated goodput  " + "  ".join(f"{m} goodput (ratio)" for m in others))
for rate in sorted(by["colocated"]):
    c = by["colocated"][rate]["goodput"]
    cells = []
    for m in others:
        d = by[m][rate]["goodput"]
        cells.append(f"{d:.3f} ({d / c if c else float('inf'):.2f})")
    print(f"{rate:4}  {c:17.3f}  " + "  ".join(cells))
peak = max(by["colocated"], key=lambda r: by["colocated"][r]["goodput"])
for m in others:
    print(f"colocated peaks at {peak} req/s; {m} ratio there and above: " + ", ".join(
        f"{r}: {by[m][r]['goodput'] / max(by['colocated'][r]['goodput'], 1e-9):.2f}"
        for r in sorted(by["colocated"]) if r >= peak))
PY
