#!/usr/bin/env bash
# Builds xgrad (optimised, with ccache where present) and runs the whole test suite with ctest.
# BUILD_DIR picks the build folder (default build), CXX the compiler on first configure, XGRAD_WERROR=1
# makes warnings errors.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DXGRAD_WERROR="${XGRAD_WERROR:-OFF}"
cmake --build "$build" -j2
ctest --test-dir "$build" -j2 --output-on-failure
