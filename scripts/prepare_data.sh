#!/usr/bin/env bash
# Writes the default corpus, the King James Bible (public domain) from Debian's bible-kjv package, to
# data/kjv.txt as plain text, one verse per line without the verse references, and unpacks Fashion-MNIST
# (Debian's dataset-fashion-mnist) into data/fashion-mnist/ for examples/cnn. Run by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
fashion=/usr/share/datasets/fashion-mnist
if [[ -d $fashion ]]; then
  mkdir -p data/fashion-mnist
  for f in "$fashion"/*-ubyte.gz; do
    dest=data/fashion-mnist/$(basename "$f" .gz)
    [[ -s $dest ]] && continue
    gzip -dc "$f" > "$dest.part" && mv "$dest.part" "$dest"
  done
fi
out=data/kjv.txt
if [[ -s "$out" ]]; then
  exit 0
fi
command -v bible >/dev/null || { echo "prepare_data.sh: the 'bible' program is missing: apt-get install bible-kjv" >&2; exit 1; }
mkdir -p data
tmp=$(mktemp data/kjv.XXXXXX)
bible -f "Genesis1:1-Revelation22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$tmp"
test "$(wc -l < "$tmp")" -gt 30000 || { echo "prepare_data.sh: the bible dump looks wrong ($tmp)" >&2; exit 1; }
mv "$tmp" "$out"
echo "prepare_data.sh: wrote $out ($(wc -c < "$out") bytes)"
