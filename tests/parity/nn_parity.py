"""nn modules against torch.nn with the same weights (written by the nn_parity program): two training steps
(outputs, the input's and every parameter's gradient, running statistics) and an eval forward, for
BatchNorm1d, BatchNorm2d, GroupNorm, RMSNorm (torch 1.13 has no nn.RMSNorm: its formula is written here),
Conv1d, Conv2d, ConvTranspose2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, RNN, LSTM and GRU.

    /usr/bin/python3 nn_parity.py /path/to/nn_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
import sys

from float64_parity import Checks, run_program, torch


class RMSNorm(torch.nn.Module):
    def __init__(self, n, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n, dtype=torch.float64))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight


def main():
    t = run_program(sys.argv[1], sys.argv[2], "nn")
    checks = Checks()
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
            pairs = [("y", t[s + ".y"], y.detach()), ("dx", t[s + ".dx"], x.grad)]
            pairs += [(f"grad.{k}", t[f"{s}.grad.{k}"], p.grad) for k, p in m.named_parameters()]
            for what, got, want in pairs:
                checks.compare(f"{s} {what}", got, want)
        m.eval()
        with torch.no_grad():
            y = m(t[name + ".eval.x"])
            checks.compare(f"{name} eval", t[name + ".eval.y"], y[0] if isinstance(y, tuple) else y)
        for k, v in m.state_dict().items():
            checks.compare(f"{name} state {k}", t[f"{name}.final.{k}"], v)
    checks.finish("nn modules against torch.nn")


if __name__ == "__main__":
    main()
