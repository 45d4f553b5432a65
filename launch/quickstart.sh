#!/usr/bin/env bash
# The main job, from a fresh machine: install, build, then train a tiny Llama for a few steps on
# 2 ranks (data parallel) under mpirun, resume its checkpoint on 4 ranks split another way
# (tensor parallel 2 x sequence parallel 2, ring attention), verify and export the newest
# checkpoint to a Hugging Face directory, generate from the export, and serve it: `weft serve` in
# the background, one completion request with curl, a clean stop.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
weft_install_deps
weft_build weft

WORK="${WEFT_QUICKSTART_DIR:-/tmp/weft-quickstart}"
rm -rf "$WORK"
mkdir -p "$WORK/model"
WEFT="$WEFT_BUILD_DIR/weft"
# Its 2 and 4 ranks share one machine: on the CPU unless WEFT_DEVICE says otherwise (on GPUs,
# NCCL wants a GPU per rank; see docs/architecture.md "Devices").
export WEFT_DEVICE="${WEFT_DEVICE:-cpu}"

cat > "$WORK/model/config.json" <<'JSON'
{
  "architectures": ["LlamaForCausalLM"],
  "vocab_size": 64,
  "hidden_size": 64,
  "intermediate_size": 160,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "max_position_embeddings": 256,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "tie_word_embeddings": false
}
JSON

# Data a tiny model can learn: each line counts upward mod 64 from a random start by a step of
# 1..3, so the next token follows from the previous two.
awk 'BEGIN { srand(7); for (i = 0; i < 512; i++) { x = int(rand() * 64); d = 1 + int(rand() * 3);
  line = x; for (t = 1; t < 32; t++) { x = (x + d) % 64; line = line " " x } print line } }' \
  > "$WORK/tokens.txt"

echo "== train: 2 ranks, data parallel"
weft_mpirun -np 2 "$WEFT" train --model "$WORK/model" --init-random --seed 1 \
  --data "$WORK/tokens.txt" --steps 60 --global-batch 16 --seq-len 32 --lr 1e-2 \
  --weight-decay 0.01 --save "$WORK/ckpt" --save-every 30 --metrics "$WORK/metrics.jsonl" \
  --log-every 10

echo "== resume from step 60 on 4 ranks: tp 2 x sp 2 (the checkpoint is resharded on load)"
weft_mpirun -np 4 "$WEFT" train --model "$WORK/model" --load "$WORK/ckpt" \
  --data "$WORK/tokens.txt" --steps 80 --global-batch 16 --seq-len 32 --lr 1e-2 \
  --weight-decay 0.01 --save "$WORK/ckpt" --metrics "$WORK/metrics.jsonl" --log-every 10 \
  --tp 2 --sp 2

echo "== verify and export the checkpoint"
"$WEFT" ckpt verify --from "$WORK/ckpt"
"$WEFT" ckpt export --from "$WORK/ckpt" --to "$WORK/exported"

echo "== generate from the exported model (prompt 10,12,14,16: counting by 2)"
"$WEFT" generate --model "$WORK/exported" --prompt-ids 10,12,14,16 --max-new-tokens 8 --greedy

echo "== serve the exported model (OpenAI-compatible HTTP on loopback), ask it once, stop it"
"$WEFT" serve --model "$WORK/exported" --port 0 --served-model-name counter \
  >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVER=$!
URL=$(weft_serve_url "$WORK/serve.out")
echo "weft serve is listening on $URL"
# The toy model has no tokenizer, so the prompt is token ids; the answer carries token_ids.
curl -sS "$URL/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "counter", "prompt": [10, 12, 14, 16], "max_tokens": 8, "temperature": 0,
       "return_token_ids": true}'
echo
kill -TERM "$SERVER"
wait "$SERVER"
echo "quickstart done: metrics in $WORK/metrics.jsonl, checkpoint in $WORK/ckpt"
