#!/usr/bin/env bash
# `gpt train` under mpirun, 2 ranks on this machine (loopback and shared memory only): a resumed run ends
# bit-identical to an uninterrupted one, ZeRO-1, bucket size and the communication thread change nothing,
# a checkpoint resumes on another number of ranks, and a rank that dies or stops ends the job.
#   gpt_distributed.sh /path/to/gpt WORK_DIR MPIRUN
set -euo pipefail
gpt="$1"
work="$2"
mpirun="$3"
rm -rf "$work"
mkdir -p "$work"
cd "$work"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# Files are compared bit for bit: every process multiplies on the same GEMM backend (auto times both in
# each process, and a loaded machine can choose differently in two runs).
export XGRAD_GEMM=openblas
run() {  # run NP ARGS...: every run has a time limit
  local np="$1"
  shift
  timeout 300 "$mpirun" -np "$np" --mca btl self,vader "$gpt" train "$@"
}
fail() { echo "FAIL: $*"; exit 1; }

awk 'BEGIN { srand(7); split("the quick brown fox jumps over a lazy dog and runs far away", w, " ");
             for (i = 0; i < 3000; i++) { printf "%s%s", w[int(rand() * 13) + 1], (i % 11 == 10) ? ".\n" : " " } }' > corpus.txt
model=(--n-layer 2 --n-head 2 --n-embd 32 --block-size 16 --batch-size 4 --dropout 0.1
       --eval-iters 3 --log-interval 5 --warmup-iters 5 --lr-decay-iters 20 --threads 1)
common=(--data corpus.txt "${model[@]}" --eval-interval 10)

run 2 "${common[@]}" --out full --max-iters 20 > full.log
grep -q "data parallel over 2 ranks (mpi): 2 ranks x batch 4 x 1 accumulation = 8 sequences, 128 tokens" full.log ||
  fail "the effective batch was not printed: $(cat full.log)"
test "$(grep -c "iter    20: train loss" full.log)" = 1 || fail "rank 0 alone should log"
run 2 "${common[@]}" --out part --max-iters 10 > part.log
run 2 "${common[@]}" --out part --max-iters 20 --resume > resume.log
cmp full/model.safetensors part/model.safetensors || fail "the resumed 2-rank run differs from the uninterrupted one"
cmp full/train_state.safetensors part/train_state.safetensors || fail "the resumed 2-rank training state differs"

# ZeRO-1 updates each element as AdamW does: the same model, bit for bit; and it resumes the same way.
run 2 "${common[@]}" --out zero --max-iters 20 --zero-optimizer > zero.log
grep -q "AdamW state sharded (ZeRO-1)" zero.log || fail "ZeRO-1 was not reported"
cmp full/model.safetensors zero/model.safetensors || fail "ZeRO-1 changed the trained model"
run 2 "${common[@]}" --out zpart --max-iters 10 --zero-optimizer > zpart.log
run 2 "${common[@]}" --out zpart --max-iters 20 --zero-optimizer --resume > zresume.log
cmp full/model.safetensors zpart/model.safetensors || fail "the resumed ZeRO-1 run differs"
# Buckets of one parameter each, reduced in the backward thread: the same model.
run 2 "${common[@]}" --out small --max-iters 20 --bucket-mb 0.001 --comm-thread false > small.log
cmp full/model.safetensors small/model.safetensors || fail "the bucket size or the communication thread changed the model"
# Accumulation: no_sync on all but the last micro-batch.
run 2 "${common[@]}" --out accum --max-iters 4 --grad-accum 3 > accum.log
grep -q "2 ranks x batch 4 x 3 accumulation = 24 sequences" accum.log || fail "accumulation: $(cat accum.log)"

# Another number of ranks: 1 (no mpirun) and 3 continue a 2-rank checkpoint (the sharded state included).
for np in 1 3; do
  cp -r zpart "np$np"
  if [[ $np == 1 ]]; then "$gpt" train "${common[@]}" --out np1 --max-iters 30 --resume > np1.log
  else run 3 "${common[@]}" --out np3 --max-iters 30 --resume --zero-optimizer > np3.log; fi
  grep -q "the checkpoint was written by 2 ranks and this run has $np" "np$np.log" || fail "np=$np: $(cat np$np.log)"
  grep -q "iter    30: train loss" "np$np.log" || fail "np=$np did not train"
done
"$gpt" sample --out np3 --prompt "the " --num-tokens 20 --seed 1 > sample.txt
test -s sample.txt || fail "no sample from the 3-rank checkpoint"

# A rank that fails (here rank 1 alone gets a corpus too small for its context) ends every rank with its error.
# The job must end by itself: `timeout` (exit 124) ending it means a rank was left waiting.
head -c 20 corpus.txt > tiny.txt
rc=0
timeout 300 "$mpirun" --mca btl self,vader -np 1 "$gpt" train "${common[@]}" --out failed --max-iters 5 : \
  -np 1 "$gpt" train "${model[@]}" --data tiny.txt --out failed --max-iters 5 > failed.log 2>&1 || rc=$?
test "$rc" != 0 || fail "the job succeeded although rank 1 failed"
test "$rc" != 124 || fail "the job did not end after rank 1 failed (ended by timeout)"
grep -q "rank 1: gpt train: error: the data file is too small" failed.log || fail "no error from rank 1: $(tail -5 failed.log)"

# A rank killed with SIGKILL: mpirun ends the job with a message, it does not hang.
long=(--data corpus.txt "${model[@]}" --max-iters 1000000 --eval-interval 1000000)
rank_pid() { pgrep -f "^$gpt train .*--out $1" | tail -1; }
# Until both ranks are in the training loop (rank 0 has logged a step, so every rank has joined an
# all-reduce), however slow the machine: no fixed sleep; the job's own time limit bounds the wait.
wait_for_steps() {
  # (a log line, or the progress bar: mpirun may give the ranks a terminal)
  while ! grep -aEq "^iter *[1-9][0-9]*: loss|\] [1-9][0-9]*/[0-9]+ loss" "$1.log" 2>/dev/null; do
    kill -0 "$2" 2>/dev/null || fail "$1 ended before training: $(tail -5 "$1.log")"
    sleep 0.1
  done
}
run 2 "${long[@]}" --out killed > killed.log 2>&1 &
job=$!
wait_for_steps killed "$job"
kill -9 "$(rank_pid killed)"
rc=0
wait "$job" || rc=$?
test "$rc" != 0 || fail "the job ended successfully after a rank was killed"
test "$rc" != 124 || fail "the job did not end after a rank was killed (ended by timeout)"
grep -q "exited on signal 9" killed.log || fail "no message about the killed rank: $(tail -5 killed.log)"

# A rank that stops (SIGSTOP) without dying: the other's collective times out and ends the job.
run 2 "${long[@]}" --out stopped --dist-timeout 2 > stopped.log 2>&1 &
job=$!
wait_for_steps stopped "$job"
kill -STOP "$(rank_pid stopped)"
rc=0
wait "$job" || rc=$?
test "$rc" != 0 || fail "the job ended successfully after a rank stopped"
test "$rc" != 124 || fail "the job did not end after a rank stopped (ended by timeout)"
grep -q "did not complete within 2 s: another rank failed or stopped" stopped.log ||
  fail "no timeout message: $(tail -5 stopped.log)"
echo "gpt_distributed: all checks passed"
