# What the serving benchmarks share. Source after launch/setup.sh, with OUT set.

# bench_llama DIR: the bench Llama (vocab 4096, hidden 256, MLP 768, 4 layers, 8 heads / 4 KV
# heads, 2048 positions, random weights from seed 7) written as an HF model directory.
bench_llama() {
  node -e "import('$WEFT_ROOT/tests/node/lib/model.mjs').then((m) => m.writeLlama('$1', {
    vocab: 4096, hidden: 256, inter: 768, layers: 4, heads: 8, kvHeads: 4, maxPositions: 2048,
    seed: 7, scale: 0.1 }))"
}

# serve_ranks NP [ENV=VALUE...] -- FLAGS: `weft serve` of $MODEL on NP ranks under mpirun, one
# BLAS thread per rank; sets SERVE_PID (mpirun's) and URL.
serve_ranks() {
  local np=$1 envs=()
  shift
  while [ "$1" != -- ]; do envs+=(-x "$1"); shift; done
  shift
  local mpirun
  read -r -a mpirun <<<"${WEFT_MPIRUN:-mpirun --allow-run-as-root --oversubscribe}"
  OPENBLAS_NUM_THREADS=1 "${mpirun[@]}" -np "$np" -x OPENBLAS_NUM_THREADS "${envs[@]}" \
    "$WEFT_BUILD_DIR/weft" serve --model "$MODEL" --port 0 --served-model-name small "$@" \
    >"$OUT/server.out" 2>"$OUT/server.err" &
  SERVE_PID=$!
  URL=$(weft_serve_url "$OUT/server.out")
}

# stop_ranks: SIGTERM to every rank of serve_ranks's server (as scancel does), then its exit.
stop_ranks() {
  for r in $(pgrep -P "$SERVE_PID"); do kill -TERM "$r"; done
  wait "$SERVE_PID"
}
