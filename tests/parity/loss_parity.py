"""nn::functional's losses against torch.nn.functional: values and gradients with respect to input and
target, on the same float64 inputs (written by the loss_parity program), for every reduction.

    /usr/bin/python3 loss_parity.py /path/to/loss_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
import json
import os
import struct
import subprocess
import sys
import warnings

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    print(f"{'FAILED' if os.environ.get('XGRAD_REQUIRE_TORCH') == '1' else 'SKIPPED'}: PyTorch cannot be imported "
          f"({e}; Debian: apt-get install python3-torch)")
    sys.exit(1 if os.environ.get("XGRAD_REQUIRE_TORCH") == "1" else 77)

DTYPES = {"F64": torch.float64, "I64": torch.int64}


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


failures = []


def compare(what, got, want):
    # float64 computations of the same formulas in different orders: a few hundred roundings of the largest value.
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    ok = got.shape == want.shape and err <= 512 * 2.0 ** -52 * scale
    if not ok:
        print(f"  FAIL {what}: max |diff| {err:.3g} (max |value| {scale:.3g}), shapes {tuple(got.shape)} {tuple(want.shape)}")
        failures.append(what)
    return err


def main():
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides the total loss")  # kl_div's advice
    prog, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "losses.safetensors")
    subprocess.run([prog, path], check=True)
    t = read_safetensors(path)
    x, y, w, pw, cw, p, tg = (t[k] for k in ("x", "y", "w", "pw", "cw", "p", "t"))
    cases = {
        "mse_loss": (lambda a, b, r: F.mse_loss(a, b, reduction=r), x, y),
        "l1_loss": (lambda a, b, r: F.l1_loss(a, b, reduction=r), x, y),
        "smooth_l1_loss": (lambda a, b, r: F.smooth_l1_loss(a, b, reduction=r, beta=0.8), x, y),
        "huber_loss": (lambda a, b, r: F.huber_loss(a, b, reduction=r, delta=1.3), x, y),
        "bce_with_logits": (lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, reduction=r), x, p),
        "bce_with_logits_weighted": (lambda a, b, r: F.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw, reduction=r), x, p),
        "nll_loss": (lambda a, b, r: F.nll_loss(F.log_softmax(a, -1), tg, reduction=r), x, y),
        "nll_loss_weighted": (lambda a, b, r: F.nll_loss(F.log_softmax(a, -1), tg, weight=cw, reduction=r), x, y),
        "kl_div": (lambda a, b, r: F.kl_div(F.log_softmax(a, -1), F.softmax(b, -1), reduction=r), x, y),
        "kl_div_log_target": (lambda a, b, r: F.kl_div(F.log_softmax(a, -1), F.log_softmax(b, -1), reduction=r, log_target=True), x, y),
    }
    worst, count = 0.0, 0
    runs = [(name, r) for name in cases for r in ("mean", "sum", "none")] + [("kl_div", "batchmean")]
    for name, r in runs:
        f, a0, b0 = cases[name]
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        loss = f(a, b, r)
        ga, gb = torch.autograd.grad(loss, (a, b), torch.ones_like(loss), allow_unused=True)
        ga = torch.zeros_like(a) if ga is None else ga
        gb = torch.zeros_like(b) if gb is None else gb
        key = f"{name}.{r}"
        for what, got, want in (("loss", t[key + ".loss"], loss.detach()), ("grad_a", t[key + ".grad_a"], ga),
                                ("grad_b", t[key + ".grad_b"], gb)):
            worst = max(worst, compare(f"{key} {what}", got.reshape(want.shape) if got.numel() == want.numel() else got, want))
            count += 1
    if failures:
        print(f"{len(failures)} of {count} checks failed: {', '.join(failures)}")
        sys.exit(1)
    print(f"losses against torch.nn.functional: {count} checks passed (values and both gradients), largest difference {worst:.3g}")


if __name__ == "__main__":
    main()
