"""nn modules against torch.nn with the same weights (written by the nn_parity program): two training steps
(outputs, the input's and every parameter's gradient, running statistics) and an eval forward, for
BatchNorm1d, BatchNorm2d, GroupNorm, RMSNorm (torch 1.13 has no nn.RMSNorm: its formula is written here),
Conv1d, Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, RNN, LSTM and GRU.

    /usr/bin/python3 nn_parity.py /path/to/nn_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
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

DTYPES = {"F64": torch.float64, "I64": torch.int64, "F32": torch.float32}


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


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n, dtype=torch.float64))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


failures = []


def compare(what, got, want):
    got, want = got.double(), want.double()
    scale = max(want.abs().max().item(), 1.0) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    ok = got.shape == want.shape and err <= 512 * 2.0 ** -52 * scale
    if not ok:
        print(f"  FAIL {what}: max |diff| {err:.3g} (max |value| {scale:.3g}), shapes {tuple(got.shape)} {tuple(want.shape)}")
        failures.append(what)
    return err


def main():
    prog, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "nn.safetensors")
    subprocess.run([prog, path], check=True)
    t = read_safetensors(path)
    modules = {
        "bn1d": torch.nn.BatchNorm1d(3, dtype=torch.float64),
        "bn1d_cumulative": torch.nn.BatchNorm1d(3, momentum=None, dtype=torch.float64),
        "bn2d": torch.nn.BatchNorm2d(4, momentum=0.3, eps=1e-3, dtype=torch.float64),
        "groupnorm": torch.nn.GroupNorm(3, 6, dtype=torch.float64),
        "rmsnorm": RMSNorm(8, 1e-6),
        "conv2d": torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), groups=2, dtype=torch.float64),
        "conv1d": torch.nn.Conv1d(3, 5, 3, stride=2, padding=1, dtype=torch.float64),
        "conv_transpose2d": torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=(1, 0), output_padding=1, dtype=torch.float64),
        "maxpool2d": torch.nn.MaxPool2d(3, stride=2, padding=1),
        "avgpool2d": torch.nn.AvgPool2d((2, 3), stride=(1, 2), padding=1),
        "adaptive_avgpool2d": torch.nn.AdaptiveAvgPool2d((3, 4)),
        "lstm": torch.nn.LSTM(3, 4, num_layers=2, batch_first=True, dtype=torch.float64),
        "gru": torch.nn.GRU(3, 4, num_layers=2, dtype=torch.float64),
        "rnn_relu": torch.nn.RNN(3, 4, nonlinearity="relu", dtype=torch.float64),
    }
    worst, count = 0.0, 0
    for name, m in modules.items():
        init = {k[len(name) + 6:]: v for k, v in t.items() if k.startswith(name + ".init.")}
        m.load_state_dict(init, strict=True)  # the same names: xgrad's state_dict loads as it is
        for step in range(2):
            s = f"{name}.step{step}"
            x = t[s + ".x"].clone().requires_grad_()
            m.train()
            m.zero_grad()
            y = m(x)
            y = y[0] if isinstance(y, tuple) else y  # recurrent layers: (output, states)
            y.backward(t[s + ".g"])
            checks = [("y", t[s + ".y"], y.detach()), ("dx", t[s + ".dx"], x.grad)]
            checks += [(f"grad.{k}", t[f"{s}.grad.{k}"], p.grad) for k, p in m.named_parameters()]
            for what, got, want in checks:
                worst = max(worst, compare(f"{s} {what}", got, want))
                count += 1
        m.eval()
        with torch.no_grad():
            y = m(t[name + ".eval.x"])
            worst = max(worst, compare(f"{name} eval", t[name + ".eval.y"], y[0] if isinstance(y, tuple) else y))
        count += 1
        for k, v in m.state_dict().items():
            worst = max(worst, compare(f"{name} state {k}", t[f"{name}.final.{k}"], v))
            count += 1
    if failures:
        print(f"{len(failures)} of {count} checks failed: {', '.join(failures)}")
        sys.exit(1)
    print(f"nn modules against torch.nn: {count} checks passed, largest difference {worst:.3g}")


if __name__ == "__main__":
    main()
