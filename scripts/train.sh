#!/usr/bin/env bash
# The main job: builds xgrad, trains the reference GPT (nanoGPT's "baby GPT" settings) on the default
# corpus, the King James Bible in data/kjv.txt, and samples from it. Extra arguments go to `gpt train`,
# e.g. `bash scripts/train.sh --max-iters 500` or `bash scripts/train.sh --data other.txt --out out/other`.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j2 --target gpt
[[ -s data/kjv.txt ]] || bash scripts/prepare_data.sh
out=out/kjv
for ((i = 1; i <= $#; i++)); do
  if [[ "${!i}" == "--out" ]]; then j=$((i + 1)); out="${!j}"; fi
done
"$build/examples/gpt" train --data data/kjv.txt --out "$out" "$@"
"$build/examples/gpt" sample --out "$out" --prompt "And God said" --num-tokens 300 --temperature 0.8 --top-k 40
