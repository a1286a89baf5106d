"""xg::func against torch.autograd.functional: the same functions on the same float64 inputs (written by the
func_parity program), Hessians, Hessian-vector products, Jacobians in both modes, jvp and vjp.

    /usr/bin/python3 func_parity.py /path/to/func_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
import json
import os
import struct
import subprocess
import sys

try:
    import torch
    from torch.autograd import functional as AF
except ImportError as e:
    print(f"{'FAILED' if os.environ.get('XGRAD_REQUIRE_TORCH') == '1' else 'SKIPPED'}: PyTorch cannot be imported "
          f"({e}; Debian: apt-get install python3-torch)")
    sys.exit(1 if os.environ.get("XGRAD_REQUIRE_TORCH") == "1" else 77)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F64", (name, e["dtype"])
        b, end = e["data_offsets"]
        raw = bytearray(data[8 + n + b:8 + n + end])
        out[name] = torch.frombuffer(raw, dtype=torch.float64).reshape(e["shape"]) if raw else torch.zeros(e["shape"], dtype=torch.float64)
    return out


def rosenbrock(x):
    a, b = x[:-1], x[1:]
    return ((1 - a) ** 2 + 100 * (b - a * a) ** 2).sum()


def mixed(a, b):
    return torch.stack([(torch.sin(a) * a).sum() * torch.exp(b[0]), torch.tanh(a[1] * b[1]), a[2] * a[2], b[0] * 3.0])


def layer(w, x):
    h = torch.tanh(w @ x)
    return (h * h).sum() + torch.log(1 + torch.exp(x)).sum()


failures = []


def compare(what, got, want):
    # Both are float64 computations of the same derivative in different orders: agreement to a few
    # hundred float64 roundings of the largest value.
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    ok = got.shape == want.shape and err <= 512 * 2.0 ** -52 * scale
    print(f"  {'ok  ' if ok else 'FAIL'} {what}: max |diff| {err:.3g} (max |value| {scale:.3g})")
    if not ok:
        failures.append(what)


def main():
    prog, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "func.safetensors")
    subprocess.run([prog, path], check=True)
    t = read_safetensors(path)
    compare("Rosenbrock Hessian", t["rosen.hessian"], AF.hessian(rosenbrock, t["rosen.x"]))
    compare("Rosenbrock hvp", t["rosen.hvp"], AF.hvp(rosenbrock, t["rosen.x"], t["rosen.v"])[1])
    a, b = t["mixed.a"], t["mixed.b"]
    ja, jb = AF.jacobian(mixed, (a, b))
    compare("Jacobian wrt a (reverse)", t["mixed.jacobian.a"], ja)
    compare("Jacobian wrt b (reverse)", t["mixed.jacobian.b"], jb)
    fa, fb = AF.jacobian(mixed, (a, b), strategy="forward-mode", vectorize=True)
    compare("Jacobian wrt a (forward)", t["mixed.jacobian_forward.a"], fa)
    compare("Jacobian wrt b (forward)", t["mixed.jacobian_forward.b"], fb)
    compare("jvp", t["mixed.jvp"], AF.jvp(mixed, (a, b), (t["mixed.ta"], t["mixed.tb"]))[1])
    va, vb = AF.vjp(mixed, (a, b), t["mixed.u"])[1]
    compare("vjp wrt a", t["mixed.vjp.a"], va)
    compare("vjp wrt b", t["mixed.vjp.b"], vb)
    h = AF.hessian(layer, (t["layer.w"], t["layer.x"]))
    compare("layer Hessian ww", t["layer.hessian.ww"], h[0][0])
    compare("layer Hessian wx", t["layer.hessian.wx"], h[0][1])
    compare("layer Hessian xw", t["layer.hessian.xw"], h[1][0])
    compare("layer Hessian xx", t["layer.hessian.xx"], h[1][1])
    if failures:
        print(f"{len(failures)} checks failed: {', '.join(failures)}")
        sys.exit(1)
    print("xg::func against torch.autograd.functional: all checks passed")


if __name__ == "__main__":
    main()
