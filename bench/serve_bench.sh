#!/usr/bin/env bash
# Serving benchmarks on the bench Llama (vocab 4096, hidden 256, 4 layers, 8 heads / 4 KV heads,
# 5.3M parameters, random weights, token-id prompts), each against a fresh `weft serve`:
#   1. decode tokens/s at batch 1, 8, 32 (16-token prompts, 128 new tokens each) and prefill
#      tokens/s (one 1000-token prompt); then the same decode in PyTorch (bench/decode_torch.py)
#      and in llama.cpp (bench/llama_to_gguf.py, bench/decode_llamacpp.mjs)
#   2. prefix caching: TTFT with a shared 1000-token prefix, cache on against off
#   3. a seeded Poisson rate sweep, --scheduler continuous against static, on the same trace;
#      plotted to bench/serve_rate_sweep.png
# Results: $OUT/*.jsonl (one JSON line per run). Usage: bash bench/serve_bench.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
source "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
weft_install_deps python3-matplotlib python3-torch  # serve_plot.py, decode_torch.py
weft_install_npm bench    # llama.cpp (node-llama-cpp) for the decode comparison
weft_build weft
cd "$WEFT_ROOT"
OUT="${WEFT_BENCH_OUT:-/tmp/weft-serve-bench}"
MODEL="$OUT/llama-small"
mkdir -p "$OUT"
rm -f "$OUT"/*.jsonl
bench_llama "$MODEL"

SERVER_PID=""
start_server() {
  "$WEFT_BUILD_DIR/weft" serve --model "$MODEL" --port 0 --served-model-name small "$@" \
    >"$OUT/server.out" 2>"$OUT/server.err" &
  SERVER_PID=$!
  URL=$(weft_serve_url "$OUT/server.out")
}
stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID"
}
load() {  # load FILE [serve_load flags]
  local file=$1
  shift
  node bench/serve_load.mjs --url "$URL" --model small --vocab 4096 "$@" | tee -a "$OUT/$file"
}

echo "== 1. decode and prefill throughput"
start_server
for b in 1 8 32; do
  load decode.jsonl --rate 1e9 --requests "$b" --input 16:16 --output 128:128 --seed "$b"
done
load prefill.jsonl --rate 1e9 --requests 1 --input 1000:1000 --output 1:1 --seed 5
stop_server

echo "== 1b. the same decode in PyTorch (eager, KV cache, one thread), same model and shapes"
/usr/bin/python3 bench/decode_torch.py "$MODEL" --batches 1,8,32 --prompt 16 --new 128 |
  tee "$OUT/decode_torch.jsonl"
echo "== 1c. the same decode in llama.cpp (node-llama-cpp's prebuilt CPU binary, one thread)"
/usr/bin/python3 bench/llama_to_gguf.py "$MODEL" "$MODEL.gguf"
node bench/decode_llamacpp.mjs "$MODEL.gguf" --batches 1,8,32 --prompt 16 --new 128 --vocab 4096 \
  2> >(grep -v '^\[node-llama-cpp\]' >&2) | tee "$OUT/decode_llamacpp.jsonl"

echo "== 2. prefix caching: 20 requests, one every 2 s, sharing a 1000-token prefix"
for mode in on off; do
  flags=()
  [ "$mode" = off ] && flags=(--no-prefix-caching)
  start_server "${flags[@]}"
  load "prefix_$mode.jsonl" --rate 0.5 --requests 20 --prefix 1000 --input 16:16 --output 8:8 --seed 3
  stop_server
done

echo "== 3. rate sweep: continuous vs static on one trace (input 32-512, output 16-256)"
for scheduler in continuous static; do
  start_server --scheduler "$scheduler"
  for rate in 1 2 3 4 6 8 12 16; do
    load "sweep_$scheduler.jsonl" --rate "$rate" --requests 60 --input 32:512 --output 16:256 \
      --seed 11 --slo-ttft 2 --slo-tpot 0.1
  done
  stop_server
done
/usr/bin/python3 bench/serve_plot.py "$OUT" bench/serve_rate_sweep.png
