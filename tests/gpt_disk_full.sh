#!/usr/bin/env bash
# A full disk mid-save: on a 4 MB tmpfs filled to a few KB free, the save fails with a one-line error that
# says what --resume continues from, the last complete checkpoint stays loadable, and --resume after space
# is freed continues from it. Needs root (mount); skipped (exit 77), saying so, otherwise.
#   gpt_disk_full.sh /path/to/gpt WORK_DIR
set -euo pipefail
gpt="$1"
work="$2"
if [[ $(id -u) -ne 0 ]]; then
  echo "SKIPPED: mounting a small tmpfs needs root"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work/fs"
cd "$work"
mount -t tmpfs -o size=4m xgrad_disk_full fs || { echo "SKIPPED: cannot mount a tmpfs here"; exit 77; }
trap 'umount -l "$work/fs" 2> /dev/null || true' EXIT
fail() { echo "FAIL: $*"; exit 1; }
awk 'BEGIN { srand(7); split("the quick brown fox jumps over a lazy dog and runs far away", w, " ");
             for (i = 0; i < 3000; i++) { printf "%s%s", w[int(rand() * 13) + 1], (i % 11 == 10) ? ".\n" : " " } }' > corpus.txt
args=(--data corpus.txt --n-layer 1 --n-head 2 --n-embd 32 --block-size 16 --batch-size 2 --eval-iters 1 --eval-interval 2)
"$gpt" train "${args[@]}" --out fs/run --max-iters 2 > first.log
model_sum=$(md5sum < fs/run/model.safetensors)
state_size=$(stat -c %s fs/run/train_state.safetensors)
# Leave less room than one training state needs.
free=$(( $(stat -f -c '%a' fs) * $(stat -f -c '%S' fs) ))
fill=$(( free - state_size / 2 ))
test "$fill" -gt 0 || fail "the tmpfs is smaller than expected"
head -c "$fill" /dev/zero > fs/filler || true
if "$gpt" train "${args[@]}" --out fs/run --max-iters 4 --resume > full.log 2> full.err; then
  fail "the save succeeded on a full disk"
fi
test "$(grep -c '' full.err)" -eq 1 || fail "more than one line of error: $(cat full.err)"
grep -q "No space left on device" full.err || fail "the error does not say the disk is full: $(cat full.err)"
grep -q -- "--resume continues from the checkpoint of iteration 2" full.err ||
  fail "the error does not say what --resume continues from: $(cat full.err)"
test "$(md5sum < fs/run/model.safetensors)" = "$model_sum" || fail "the saved model changed"
test -z "$(find fs/run -name '*.tmp.*')" || fail "temporary files were left: $(ls fs/run)"
"$gpt" eval --out fs/run --data corpus.txt --batches 1 --batch-size 1 > /dev/null || fail "the checkpoint left does not load"
rm fs/filler
"$gpt" train "${args[@]}" --out fs/run --max-iters 4 --resume > resumed.log 2>&1 || fail "no resume after freeing space: $(cat resumed.log)"
grep -q "resuming from fs/run at iteration 2" resumed.log || fail "resumed from elsewhere: $(cat resumed.log)"
grep -q "checkpoint in fs/run/model.safetensors (iteration 4)" resumed.log || fail "no new checkpoint: $(cat resumed.log)"
echo "gpt_disk_full: all checks passed"
