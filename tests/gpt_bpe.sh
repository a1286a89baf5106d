#!/usr/bin/env bash
# `gpt train --tokenizer gpt2` end to end: train briefly, the checkpoint carries the tokenizer for sampling,
# and invalid UTF-8 is refused by the BPE path too. GPT-2's BPE files come from `scripts/setup.sh --bpe`;
# without them the test is skipped (exit 77), saying so, unless XGRAD_REQUIRE_BPE=1 makes that a failure.
#   gpt_bpe.sh /path/to/gpt WORK_DIR BPE_DIR
set -euo pipefail
gpt="$1"
work="$2"
bpe="$3"
if [[ ! -s $bpe/encoder.json || ! -s $bpe/vocab.bpe ]]; then
  if [[ ${XGRAD_REQUIRE_BPE:-0} == 1 ]]; then
    echo "FAIL: GPT-2's BPE files are not in $bpe and XGRAD_REQUIRE_BPE=1 requires them (bash scripts/setup.sh --bpe)"
    exit 1
  fi
  echo "SKIPPED: GPT-2's BPE files are not in $bpe (bash scripts/setup.sh --bpe fetches them)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
awk 'BEGIN { srand(7); split("the quick brown fox jumps over a lazy dog and runs far away", w, " ");
             for (i = 0; i < 3000; i++) { printf "%s%s", w[int(rand() * 13) + 1], (i % 11 == 10) ? ".\n" : " " } }' > corpus.txt
"$gpt" train --data corpus.txt --out bpe --tokenizer gpt2 --bpe-dir "$bpe" --n-layer 1 --n-head 2 --n-embd 16 \
  --block-size 16 --batch-size 2 --max-iters 4 --eval-interval 4 --eval-iters 1 > bpe.log
grep -q "vocab 50257" bpe.log || fail "no 50257-token vocabulary: $(cat bpe.log)"
out=$("$gpt" sample --out bpe --prompt "the quick" --num-tokens 5)
[[ "$out" == "the quick"* ]] || fail "gpt2-tokenized sample does not start with its prompt: $out"
# An overlong UTF-8 form in the corpus: a one-line error naming it, through the BPE tokenizer.
{ for _ in $(seq 50); do printf 'valid text '; done; printf '\xc0\xaf'; for _ in $(seq 50); do printf ' more text'; done; } > overlong.txt
if "$gpt" train --data overlong.txt --out bad --tokenizer gpt2 --bpe-dir "$bpe" > /dev/null 2> err.txt; then
  fail "invalid UTF-8 was accepted"
fi
grep -q "overlong form" err.txt || fail "the error does not name the overlong form: $(cat err.txt)"
test ! -e bad/model.safetensors || fail "a checkpoint was written from invalid input"
echo "gpt_bpe: all checks passed"
