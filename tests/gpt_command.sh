#!/usr/bin/env bash
# End-to-end checks of the gpt command: train, resume to a bit-identical model, sample, and refuse bad
# input with a one-line error and a non-zero exit, without touching existing checkpoints.
#   gpt_command.sh /path/to/gpt WORK_DIR
set -euo pipefail
gpt="$1"
work="$2"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
# Files are compared bit for bit: every process multiplies on the same GEMM backend (auto times both in
# each process, and a loaded machine can choose differently in two runs).
export XGRAD_GEMM=openblas

# A small corpus made here, so the test needs no downloaded data.
awk 'BEGIN { srand(7); split("the quick brown fox jumps over a lazy dog and runs far away", w, " ");
             for (i = 0; i < 3000; i++) { printf "%s%s", w[int(rand() * 13) + 1], (i % 11 == 10) ? ".\n" : " " } }' > corpus.txt

common=(--data corpus.txt --n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 4 --dropout 0.1
        --eval-interval 10 --eval-iters 2 --log-interval 5 --warmup-iters 5 --lr-decay-iters 20)
"$gpt" train "${common[@]}" --out full --max-iters 20 > full.log
"$gpt" train "${common[@]}" --out part --max-iters 10 > part.log
"$gpt" train "${common[@]}" --out part --max-iters 20 --resume > resume.log
grep -q "resuming from part at iteration 10" resume.log
cmp full/model.safetensors part/model.safetensors || { echo "FAIL: resumed training differs from uninterrupted training"; exit 1; }
cmp full/train_state.safetensors part/train_state.safetensors || { echo "FAIL: resumed training state differs"; exit 1; }
# Activation checkpointing changes memory, not results: the same model, bit for bit.
"$gpt" train "${common[@]}" --out ckpt --max-iters 20 --checkpoint-activations > ckpt.log
cmp full/model.safetensors ckpt/model.safetensors || { echo "FAIL: --checkpoint-activations changed the trained model"; exit 1; }
# bf16 mixed precision trains end to end and lands near the float32 run (20 iterations of a tiny model).
"$gpt" train "${common[@]}" --out bf16 --max-iters 20 --dtype bf16 > bf16.log
f32_val=$(grep "iter    20: train loss" full.log | sed 's/.*val loss //')
bf16_val=$(grep "iter    20: train loss" bf16.log | sed 's/.*val loss //')
awk -v a="$f32_val" -v b="$bf16_val" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && d < 0.05) }' ||
  { echo "FAIL: bf16 validation loss $bf16_val is far from float32's $f32_val"; exit 1; }
cmp -s full/model.safetensors bf16/model.safetensors && { echo "FAIL: --dtype bf16 changed nothing"; exit 1; }
# metrics.csv: the same rows but for the tokens/s column, which is a timing.
diff <(cut -d, -f1-4 full/metrics.csv) <(cut -d, -f1-4 part/metrics.csv) || { echo "FAIL: metrics.csv differs after resume"; exit 1; }

# Gradient accumulation, threads, and sampling without the cache run end to end.
"$gpt" train "${common[@]}" --out accum --max-iters 4 --grad-accum 3 --threads 2 > accum.log
grep -q "iter     4: train loss" accum.log
nocache=$("$gpt" sample --out full --prompt "the " --num-tokens 30 --seed 3 --cache false --threads 1)
cached=$("$gpt" sample --out full --prompt "the " --num-tokens 30 --seed 3)
test "$nocache" = "$cached" || { echo "FAIL: sampling with and without the cache differ"; exit 1; }
"$gpt" eval --out full --data corpus.txt --batches 2 --batch-size 3 --threads 1 > eval.log
grep -Eq "^loss [0-9]+\.[0-9]+ on 2 batches of 3 x 16 tokens" eval.log || { echo "FAIL: eval printed:"; cat eval.log; exit 1; }

# A run killed between the two files of a checkpoint leaves a pair --resume accepts. Simulated: the
# state matching the model was moved aside as train_state.prev and a newer state (another run's, at
# iteration 4) written, but the model not yet replaced.
cp -r part killed
mv killed/train_state.safetensors killed/train_state.prev.safetensors
cp accum/train_state.safetensors killed/train_state.safetensors
"$gpt" train "${common[@]}" --out killed --max-iters 22 --resume > killed.log
grep -q "resuming from killed at iteration 20" killed.log || { echo "FAIL: no resume from the kept state"; cat killed.log; exit 1; }
test ! -e killed/train_state.prev.safetensors || { echo "FAIL: the kept state was not cleared by the next save"; exit 1; }

# Killed for real: kill -9 at random moments of a run that checkpoints every iteration. Each time, the
# checkpoint left behind must load and resume, and temporary files must not pile up.
quick=(--data corpus.txt --n-layer 1 --n-head 2 --n-embd 16 --block-size 16 --batch-size 2 --eval-iters 1 --eval-interval 1)
"$gpt" train "${quick[@]}" --out killme --max-iters 2 > /dev/null
for i in 1 2 3 4 5 6 7 8; do
  "$gpt" train "${quick[@]}" --out killme --max-iters 100000 --resume > /dev/null 2>&1 &
  sleep "0.$(( RANDOM % 9 + 1 ))"
  kill -9 $! 2> /dev/null || true
  wait $! 2> /dev/null || true
  "$gpt" eval --out killme --data corpus.txt --batches 1 --batch-size 1 > /dev/null \
    || { echo "FAIL: the checkpoint left by kill $i does not load"; exit 1; }
done
at=$(grep -ao '"iter":"[0-9]*"' killme/model.safetensors | head -1 | tr -dc '0-9')
"$gpt" train "${quick[@]}" --out killme --max-iters $((at + 1)) --resume > killme.log 2>&1 \
  || { echo "FAIL: no resume after the kills:"; cat killme.log; exit 1; }
test "$(find killme -name '*.tmp.*' | wc -l)" -le 1 || { echo "FAIL: temporary files pile up"; ls killme; exit 1; }

# One writer per output folder: a second run into a folder being written is refused at start, naming the
# holder, and changes nothing; a lock left by a killed run is taken over with a note, and the temporaries of
# killed writers are removed.
"$gpt" train "${quick[@]}" --out locked --max-iters 100000 > locked.log 2>&1 &
holder=$!
until grep -aq "parameters" locked.log 2>/dev/null && test -e locked/.gpt.lock; do
  kill -0 "$holder" 2>/dev/null || { echo "FAIL: the first writer ended early: $(cat locked.log)"; exit 1; }
  sleep 0.1
done
before=$(ls -la locked | md5sum)
if "$gpt" train "${quick[@]}" --out locked --max-iters 3 > second.log 2> second.err; then
  kill "$holder"; echo "FAIL: a second writer was let into a folder being written"; exit 1
fi
grep -q "locked is being written by another gpt process (pid $holder)" second.err ||
  { kill "$holder"; echo "FAIL: the refusal does not name the holder: $(cat second.err)"; exit 1; }
kill -9 "$holder"; wait "$holder" 2> /dev/null || true
dead=$(sh -c 'echo $$')  # a pid that no longer runs
echo "$dead" > locked/.gpt.lock
: > "locked/model.safetensors.tmp.$dead.1f2e"
"$gpt" train "${quick[@]}" --out locked --max-iters 2 --resume > taken.log 2> taken.err ||
  { echo "FAIL: the stale lock was not taken over: $(cat taken.err)"; exit 1; }
grep -q "taking over the lock of locked left by process $dead" taken.err || { echo "FAIL: no note: $(cat taken.err)"; exit 1; }
test ! -e "locked/model.safetensors.tmp.$dead.1f2e" || { echo "FAIL: a killed writer's temporary file was kept"; exit 1; }
test ! -e locked/.gpt.lock || { echo "FAIL: the lock outlived its run"; exit 1; }

# A temperature so small that dividing by it overflows samples greedily, as temperature 0 does.
g0=$("$gpt" sample --out full --prompt "the " --num-tokens 30 --temperature 0)
g1=$("$gpt" sample --out full --prompt "the " --num-tokens 30 --temperature 1e-310)
test "$g0" = "$g1" || { echo "FAIL: --temperature 1e-310 is not greedy:"; echo "$g0"; echo "$g1"; exit 1; }

out=$("$gpt" sample --out full --prompt "the " --num-tokens 40 --seed 1)
test "${#out}" -ge 40 || { echo "FAIL: sample printed too little: $out"; exit 1; }
test "$("$gpt" sample --out full --prompt "the " --num-tokens 40 --seed 1)" = "$out" || { echo "FAIL: same seed, different text"; exit 1; }

# LoRA fine-tuning on another text: the adapter alone, a merged export, and both sample the same text.
awk 'BEGIN { srand(9); split("a lazy dog runs over the brown fox and far away", w, " ");
             for (i = 0; i < 2000; i++) { printf "%s%s", w[int(rand() * 10) + 1], (i % 7 == 6) ? ".\n" : " " } }' > other.txt
"$gpt" finetune --base full --data other.txt --out ft --rank 4 --alpha 8 --max-iters 10 --eval-interval 5 --eval-iters 2 \
  --batch-size 4 --warmup-iters 2 --lr-decay-iters 10 > ft.log
grep -q "trainable parameters" ft.log
test -s ft/adapter.safetensors && test -s ft/merged/model.safetensors
test "$(stat -c %s ft/adapter.safetensors)" -lt "$(stat -c %s full/model.safetensors)" || { echo "FAIL: the adapter is not smaller than the model"; exit 1; }
a=$("$gpt" sample --adapter ft --prompt "the " --num-tokens 30 --seed 2)
m=$("$gpt" sample --out ft/merged --prompt "the " --num-tokens 30 --seed 2)
test "$a" = "$m" || { echo "FAIL: adapter and merged model sample differently:"; echo "$a"; echo "$m"; exit 1; }

expect_error() {  # expect_error FRAGMENT COMMAND...: a non-zero exit and a one-line error containing FRAGMENT
  local frag="$1"; shift
  if "$@" > err.out 2> err.txt; then echo "FAIL: succeeded: $*"; exit 1; fi
  grep -q -- "$frag" err.txt || { echo "FAIL: '$*' printed:"; cat err.txt; exit 1; }
  test "$(grep -c '' err.txt)" -le 2 || { echo "FAIL: more than a line of error output:"; cat err.txt; exit 1; }
}
sum_before=$(md5sum full/model.safetensors)
: > empty.txt
expect_error "is empty" "$gpt" train --data empty.txt --out full --max-iters 1
expect_error "does not exist" "$gpt" train --data missing.txt --out full
head -c 20 corpus.txt > small.txt
expect_error "too small" "$gpt" train --data small.txt --out full --max-iters 1
expect_error "not in the vocabulary" "$gpt" sample --out full --prompt "XYZ"
expect_error "no checkpoint" "$gpt" sample --out nowhere
mkdir -p corrupt && head -c 1000 full/model.safetensors > corrupt/model.safetensors
expect_error "truncated" "$gpt" sample --out corrupt
expect_error "multiple of n_head" "$gpt" train --data corpus.txt --out other --n-head 3 --max-iters 1
expect_error "n_layer 2, but --n-layer 4" "$gpt" train --data corpus.txt --out full --n-layer 4 --max-iters 30 --resume
echo "XYZ unknown characters" > unknown.txt
expect_error "not in the vocabulary" "$gpt" finetune --base full --data unknown.txt --out ft2
expect_error "no adapter" "$gpt" sample --adapter nowhere
test "$(md5sum full/model.safetensors)" = "$sum_before" || { echo "FAIL: a failed command changed the checkpoint"; exit 1; }
echo "gpt command: all checks passed"
