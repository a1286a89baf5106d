"""nn::functional's losses against torch.nn.functional: values and gradients with respect to input and
target, on the same float64 inputs (written by the loss_parity program), for every reduction.

    /usr/bin/python3 loss_parity.py /path/to/loss_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
import sys
import warnings

from float64_parity import Checks, run_program, torch
import torch.nn.functional as F


def main():
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides the total loss")  # kl_div's advice
    t = run_program(sys.argv[1], sys.argv[2], "losses")
    checks = Checks()
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
            checks.compare(f"{key} {what}", got.reshape(want.shape) if got.numel() == want.numel() else got, want)
    checks.finish("losses against torch.nn.functional (values and both gradients)")


if __name__ == "__main__":
    main()
