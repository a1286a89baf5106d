#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, with AddressSanitizer and UBSan in the whole library) and fuzzes
# each from its committed seed corpus for SECONDS (default 60). New inputs go to build-fuzz/corpus/NAME;
# a crash leaves its input in build-fuzz/ and fails the script.
#   bash scripts/fuzz.sh [SECONDS] [HARNESS...]      e.g. bash scripts/fuzz.sh 600 safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
harnesses=("$@")
[[ ${#harnesses[@]} -gt 0 ]] || harnesses=(safetensors tokenizers checkpoint_config)
build=build-fuzz
# -Wno-pass-failed: sanitizer instrumentation keeps some omp-simd loops from vectorising; that is expected here.
flags="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=all -fno-omit-frame-pointer -Wno-pass-failed"
CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" \
  -DXGRAD_FUZZ=ON -DXGRAD_BUILD_TESTS=OFF -DXGRAD_BUILD_BENCH=OFF
cmake --build "$build" -j2 --target "${harnesses[@]/#/fuzz_}"
export XGRAD_BPE_DIR="$PWD/data/gpt2" XGRAD_CACHE_LIMIT=0 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for h in "${harnesses[@]}"; do
  mkdir -p "$build/corpus/$h"
  echo "fuzz.sh: fuzz_$h for ${seconds} s"
  set +e
  (cd "$build" && "./tests/fuzz/fuzz_$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
     -print_final_stats=1 "corpus/$h" "../tests/fuzz/corpus/$h" > "corpus/$h.log" 2>&1)
  rc=$?
  set -e
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY|Test unit written)" "$build/corpus/$h.log" || true
  [[ $rc -eq 0 ]] || { tail -n 40 "$build/corpus/$h.log"; echo "fuzz.sh: fuzz_$h found a crash (input saved in $build/)" >&2; exit 1; }
done
echo "fuzz.sh: no crashes"
