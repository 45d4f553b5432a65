#!/usr/bin/env bash
# TokenWeave in training (docs/algorithms.md "TokenWeave in training") on 2 ranks, one BLAS thread
# each: the median step time (steps 2..6 of `weft train --init-random`, 3 rounds of the modes in
# turn, so that a busy spell of the machine spreads over all of them) of a Llama of hidden 256,
# MLP 768, 4 layers, 8 heads / 4 KV heads, vocab 4096, 8 sequences of 512 tokens a step, under
#   tp      --tp 2                                   (all-reduce, every rank all rows)
#   sp      --tp 2 --sequence-parallel               (Megatron-SP: TokenWeave's layout, no halves)
#   weave   --tp 2 --token-weave                     (two halves, collectives overlapped)
#   nocomm  --tp 2 --token-weave, WEFT_BENCH_DROP_COMM=1 (every collective a local copy: the
#           compute alone, wrong results; the floor that overlap approaches)
# Results: $OUT/<mode>.r<round>.jsonl (the metrics). Usage: bash bench/token_weave_train_bench.sh
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../launch/setup.sh"
weft_build weft
cd "$WEFT_ROOT"
OUT="${WEFT_BENCH_OUT:-/tmp/weft-weave-train-bench}"
MODEL="$OUT/llama-small"
mkdir -p "$MODEL"
cat >"$MODEL/config.json" <<'JSON'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 4096, "hidden_size": 256,
 "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8,
 "num_key_value_heads": 4, "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
 "tie_word_embeddings": false}
JSON
/usr/bin/python3 -c "
import random
random.seed(5)
with open('$OUT/tokens.txt', 'w') as f:
    for _ in range(48):
        f.write(' '.join(str(random.randrange(4096)) for _ in range(512)) + '\n')
"
read -r -a mpirun <<<"${WEFT_MPIRUN:-mpirun --allow-run-as-root --oversubscribe}"
rm -f "$OUT"/{tp,sp,weave,nocomm}.jsonl
for round in 1 2 3; do for mode in tp sp weave nocomm; do
  envs=()
  case $mode in
    tp) flags=(--tp 2) ;;
    sp) flags=(--tp 2 --sequence-parallel) ;;
    weave) flags=(--tp 2 --token-weave) ;;
    nocomm) flags=(--tp 2 --token-weave --skip-nonfinite) envs=(-x WEFT_BENCH_DROP_COMM=1) ;;
  esac
  OPENBLAS_NUM_THREADS=1 "${mpirun[@]}" -np 2 -x OPENBLAS_NUM_THREADS "${envs[@]}" \
    "$WEFT_BUILD_DIR/weft" train --model "$MODEL" --init-random --data "$OUT/tokens.txt" \
    --global-batch 8 --seq-len 512 --steps 6 --lr 1e-3 --weight-decay 0 \
    --metrics "$OUT/$mode.r$round.jsonl" "${flags[@]}" >/dev/null
  tail -n +2 "$OUT/$mode.r$round.jsonl" >>"$OUT/$mode.jsonl"  # step 1 warms up
done; done
/usr/bin/python3 - "$OUT" <<'PY'
import json, sys, statistics
out = sys.argv[1]
t = {}
for m in ("tp", "sp", "weave", "nocomm"):
    steps = [json.loads(l)["step_time_s"] for l in open(f"{out}/{m}.jsonl")]
    t[m] = statistics.median(steps)
print("mode    step time (s, median of 15 steps)   over no communication")
for m in t:
    print(f"{m:7} {t[m]:10.3f} {t[m] / t['nocomm']:30.3f}")
PY
