#!/usr/bin/env bash
# The main job: builds xgrad and trains the example model (an MLP on the three-spirals problem).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j2 --target mlp
if [[ $# -eq 0 ]]; then set -- 1000 "$build/mlp.safetensors"; fi
"$build/examples/mlp" "$@"
