"""What the float64 parity scripts share: PyTorch's import (a skip, exit 77, without it unless
XGRAD_REQUIRE_TORCH=1), running the xgrad program that writes its results, reading its safetensors file, and
comparing float64 results to a few hundred roundings of the largest value (the same formulas summed in
other orders)."""
import json
import os
import struct
import subprocess
import sys

try:
    import torch
except ImportError as e:
    print(f"{'FAILED' if os.environ.get('XGRAD_REQUIRE_TORCH') == '1' else 'SKIPPED'}: PyTorch cannot be imported "
          f"({e}; Debian: apt-get install python3-torch)")
    sys.exit(1 if os.environ.get("XGRAD_REQUIRE_TORCH") == "1" else 77)

DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + end])
        dt = DTYPES[e["dtype"]]
        out[name] = torch.frombuffer(raw, dtype=dt).reshape(e["shape"]) if raw else torch.zeros(e["shape"], dtype=dt)
    return out


def run_program(prog, work, name):
    """Runs `prog OUT.safetensors` in `work` and returns what it wrote."""
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, name + ".safetensors")
    subprocess.run([prog, path], check=True)
    return read_safetensors(path)


class Checks:
    """float64 comparisons, counted; each failure printed and kept."""

    def __init__(self, verbose=False):
        self.failures, self.count, self.worst, self.verbose = [], 0, 0.0, verbose

    def compare(self, what, got, want):
        got, want = got.double(), want.double()
        scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
        err = (got - want).abs().max().item() if want.numel() else 0.0
        ok = got.shape == want.shape and err <= 512 * 2.0 ** -52 * scale
        self.count += 1
        self.worst = max(self.worst, err)
        if self.verbose or not ok:
            print(f"  {'ok  ' if ok else 'FAIL'} {what}: max |diff| {err:.3g} (max |value| {scale:.3g})"
                  + ("" if ok else f", shapes {tuple(got.shape)} {tuple(want.shape)}"))
        if not ok:
            self.failures.append(what)

    def finish(self, title):
        if self.failures:
            print(f"{len(self.failures)} of {self.count} checks failed: {', '.join(self.failures)}")
            sys.exit(1)
        print(f"{title}: {self.count} checks passed, largest difference {self.worst:.3g}")
