"""xg::func against torch.autograd.functional: the same functions on the same float64 inputs (written by the
func_parity program), Hessians, Hessian-vector products, Jacobians in both modes, jvp and vjp.

    /usr/bin/python3 func_parity.py /path/to/func_parity WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed, unless XGRAD_REQUIRE_TORCH=1.
"""
import sys

from float64_parity import Checks, run_program, torch  # noqa: F401  (exits 77 without torch)
from torch.autograd import functional as AF


def rosenbrock(x):
    a, b = x[:-1], x[1:]
    return ((1 - a) ** 2 + 100 * (b - a * a) ** 2).sum()


def mixed(a, b):
    return torch.stack([(torch.sin(a) * a).sum() * torch.exp(b[0]), torch.tanh(a[1] * b[1]), a[2] * a[2], b[0] * 3.0])


def layer(w, x):
    h = torch.tanh(w @ x)
    return (h * h).sum() + torch.log(1 + torch.exp(x)).sum()


def main():
    t = run_program(sys.argv[1], sys.argv[2], "func")
    checks = Checks(verbose=True)
    compare = checks.compare
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
    checks.finish("xg::func against torch.autograd.functional")


if __name__ == "__main__":
    main()
