#!/usr/bin/env bash
# bf16 mixed precision trains as well as float32: the baby GPT (nanoGPT's settings: 4 layers, 4 heads,
# 128 wide, context 64, batch 12, 2000 iterations) on the default corpus, once with --dtype float32 and once
# with --dtype bf16, side by side on one thread each; the validation losses at iteration 2000 must agree
# within 0.03. About 6 minutes on 2 cores: run by CI as its own stage, not by ctest.
#   bf16_convergence.sh /path/to/gpt CORPUS WORK_DIR
set -euo pipefail
gpt="$1"
corpus="$2"
work="$3"
rm -rf "$work"
mkdir -p "$work"
args=(--data "$corpus" --max-iters 2000 --lr-decay-iters 2000 --eval-interval 500 --eval-iters 200 --threads 1)
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$gpt" train "${args[@]}" --out "$work/f32" --dtype float32 > "$work/f32.log" &
f32=$!
OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$gpt" train "${args[@]}" --out "$work/bf16" --dtype bf16 > "$work/bf16.log"
wait "$f32"
a=$(grep "^iter  2000: train loss" "$work/f32.log" | sed 's/.*val loss //')
b=$(grep "^iter  2000: train loss" "$work/bf16.log" | sed 's/.*val loss //')
echo "validation loss at 2000 iterations: float32 $a, bf16 $b"
awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && d <= 0.03) }' ||
  { echo "FAIL: bf16 and float32 differ by more than 0.03"; exit 1; }
