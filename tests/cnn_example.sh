#!/usr/bin/env bash
# examples/cnn end to end on a slice of Fashion-MNIST: one epoch on 2,000 images must learn (test accuracy
# far above the 10% of chance) and print its figures; bad flags and a damaged file get one-line errors.
# Skipped (exit 77), saying so, without the images (bash scripts/setup.sh installs them).
#   cnn_example.sh /path/to/cnn DATA_DIR WORK_DIR
set -euo pipefail
cnn="$1"
data="$2"
work="$3"
if [[ ! -s $data/train-images-idx3-ubyte ]]; then
  echo "SKIPPED: Fashion-MNIST is not in $data (bash scripts/setup.sh installs and unpacks it)"
  exit 77
fi
rm -rf "$work"
mkdir -p "$work"
fail() { echo "FAIL: $*"; exit 1; }
"$cnn" --data "$data" --epochs 1 --limit 2000 --threads 1 > "$work/out.txt"
grep -q "^2000 train / 10000 test images" "$work/out.txt" || fail "unexpected header: $(cat "$work/out.txt")"
acc=$(sed -n 's/^epoch 1: train loss [0-9.]*, test accuracy \([0-9.]*\)%.*/\1/p' "$work/out.txt")
awk -v a="$acc" 'BEGIN { exit !(a ~ /^[0-9.]+$/ && a > 50) }' || fail "one epoch on 2,000 images reached only ${acc:-no}% test accuracy"
# A truncated image file and a bad flag: one line each, no crash.
mkdir -p "$work/bad"
cp "$data"/*labels* "$work/bad/"
head -c 1000 "$data/train-images-idx3-ubyte" > "$work/bad/train-images-idx3-ubyte"
cp "$data/t10k-images-idx3-ubyte" "$work/bad/"
if "$cnn" --data "$work/bad" --epochs 1 > /dev/null 2> "$work/err.txt"; then fail "a truncated file was accepted"; fi
grep -q "truncated" "$work/err.txt" && test "$(grep -c '' "$work/err.txt")" -eq 1 || fail "$(cat "$work/err.txt")"
if "$cnn" --data "$data" --epochs 0 > /dev/null 2> "$work/err.txt"; then fail "--epochs 0 was accepted"; fi
echo "cnn_example: test accuracy ${acc}% after one epoch on 2,000 images"
