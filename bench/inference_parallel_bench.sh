#!/usr/bin/env bash
# Inference parallelism on 2 ranks, the bench Llama of bench/serve_bench.sh (vocab 4096, hidden
# 256, 4 layers, 8 heads / 4 KV heads), one BLAS thread per rank.
# 1. Shift parallelism against its two fixed modes (docs/serving.md "Shift parallelism"):
#   tp     weft serve --tp 2                                      (every step tensor-parallel)
#   sp     weft serve --shift-parallel --sp 2 --shift-threshold 0 (every step of >= 2 tokens SP)
#   shift  weft serve --shift-parallel --sp 2                      (SP above 256 tokens a step)
# Low load: 8 requests one after another (512-token prompt, 32 new tokens): mean latency.
# High load: 48 requests at once (512-token prompts, 32 new tokens): output tokens/s.
# 2. TokenWeave (docs/serving.md "TokenWeave"): 16 prompts of 512 tokens at once, one new token
#    each, steps of up to 2048 tokens: the makespan (median of 10, the modes taking turns) of --tp 2, of --tp 2
#    --token-weave, and of the latter with every collective replaced by a local copy
#    (WEFT_BENCH_DROP_COMM=1: the compute alone, wrong results), the floor overlap approaches.
# Results: $OUT/*.jsonl. Usage: bash bench/inference_parallel_bench.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
weft_build weft
cd "$WEFT_ROOT"
OUT="${WEFT_BENCH_OUT:-/tmp/weft-inference-bench}"
MODEL="$OUT/llama-small"
mkdir -p "$OUT"
rm -f "$OUT"/shift_*.jsonl "$OUT"/shift_steps.txt "$OUT"/weave.jsonl
bench_llama "$MODEL"

echo "== 1. shift parallelism"
for mode in tp sp shift; do
  case $mode in
    tp) flags=(--tp 2) ;;
    sp) flags=(--shift-parallel --sp 2 --shift-threshold 0) ;;
    shift) flags=(--shift-parallel --sp 2) ;;
  esac
  serve_ranks 2 -- "${flags[@]}"
  for i in 1 2 3 4 5 6 7 8; do
    node bench/serve_load.mjs --url "$URL" --model small --vocab 4096 --rate 1e9 --requests 1 \
      --input 512:512 --output 32:32 --seed "$i" | sed "s/^{/{\"mode\":\"$mode\",/" >>"$OUT/shift_low.jsonl"
  done
  node bench/serve_load.mjs --url "$URL" --model small --vocab 4096 --rate 1e9 --requests 48 \
    --input 512:512 --output 32:32 --seed 9 | sed "s/^{/{\"mode\":\"$mode\",/" >>"$OUT/shift_high.jsonl"
  curl -s "$URL/metrics" | grep -E '^weft_engine_(sequence_parallel_)?steps_total' |
    sed "s/^/$mode /" >>"$OUT/shift_steps.txt"
  stop_ranks
done

echo "== 2. TokenWeave"
# The modes take turns (WEFT_WEAVE_ROUNDS rounds of WEFT_WEAVE_REPS runs each): on a shared
# machine the speed drifts by more than the differences measured here.
for round in $(seq 1 "${WEFT_WEAVE_ROUNDS:-2}"); do
 for mode in tp weave nocomm; do
  case $mode in
    tp) serve_ranks 2 -- --tp 2 --max-num-batched-tokens 2048 ;;
    weave) serve_ranks 2 -- --tp 2 --token-weave --max-num-batched-tokens 2048 ;;
    nocomm) serve_ranks 2 WEFT_BENCH_DROP_COMM=1 -- --tp 2 --token-weave --max-num-batched-tokens 2048 ;;
  esac
  for i in $(seq 1 "${WEFT_WEAVE_REPS:-5}"); do
    node bench/serve_load.mjs --url "$URL" --model small --vocab 4096 --rate 1e9 --requests 16 \
      --input 512:512 --output 1:1 --seed "$((20 + i))" | sed "s/^{/{\"mode\":\"$mode\",/" >>"$OUT/weave.jsonl"
  done
  stop_ranks
 done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, statistics
out = sys.argv[1]
low, high = {}, {}
for line in open(f"{out}/shift_low.jsonl"):
    r = json.loads(line)
    low.setdefault(r["mode"], []).append(r["makespan_s"])
for line in open(f"{out}/shift_high.jsonl"):
    r = json.loads(line)
    high[r["mode"]] = r["output_tokens_per_s"]
print("mode   low-load latency (s, mean of 8)   high-load output tokens/s")
for m in ("tp", "sp", "shift"):
    print(f"{m:6} {statistics.mean(low[m]):10.3f} {high[m]:30.1f}")
best_low = min(statistics.mean(low[m]) for m in ("tp", "sp"))
best_high = max(high[m] for m in ("tp", "sp"))
print(f"shift latency / best fixed mode: {statistics.mean(low['shift']) / best_low:.3f}")
print(f"shift throughput / best fixed mode: {high['shift'] / best_high:.3f}")
weave = {}
for line in open(f"{out}/weave.jsonl"):
    r = json.loads(line)
    weave.setdefault(r["mode"], []).append(r["makespan_s"])
print(f"TokenWeave makespan (s, median of {len(weave['tp'])}; min-max): " +
      ", ".join(f"{m} {statistics.median(weave[m]):.3f} ({min(weave[m]):.3f}-{max(weave[m]):.3f})"
                for m in ("tp", "weave", "nocomm")))
print(f"weave / no-communication: {statistics.median(weave['weave']) / statistics.median(weave['nocomm']):.3f}; "
      f"tp / no-communication: {statistics.median(weave['tp']) / statistics.median(weave['nocomm']):.3f}")
PY
