"""Runs xgrad's and PyTorch's core benchmarks side by side, interleaved, and prints the ratios.

    /usr/bin/python3 bench/compare.py [--build build] [--threads 1] [--rounds 3]

Needs Debian's python3-torch (bash scripts/setup.sh --torch). Each figure is the median over rounds of
each process's median time per iteration; a ratio > 1 means xgrad is faster.
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    xg_bin = os.path.join(args.build, "bench", "bench_core")
    torch_py = [sys.executable, os.path.join(HERE, "torch_core.py")]

    rows = []
    for case, unit, scale in [("op_forward", "us/op", 1e6), ("op_fwd_bwd", "us/op", 1e6),
                              ("linear_baby", "ms", 1e3), ("linear_gpt2", "ms", 1e3), ("attention_1024", "ms", 1e3),
                              ("attention_baby", "ms", 1e3), ("func_vjp", "ms", 1e3), ("func_jvp", "ms", 1e3),
                              ("func_hvp", "ms", 1e3), ("conv2d_3x3", "ms", 1e3)]:
        xs, ts, raw = [], [], []
        for _ in range(args.rounds):
            xs.append(run([xg_bin, case, str(args.threads)], args.threads))
            ts.append(run(torch_py + [case, str(args.threads)], args.threads))
            if case.startswith("linear_"):
                raw.append(run([xg_bin, case.replace("linear_", "sgemm_"), str(args.threads)], args.threads))
        x, t = statistics.median(xs), statistics.median(ts)
        extra = ""
        if raw:
            r = statistics.median(raw)
            extra = f"raw sgemm {r * scale:.3f} {unit}, xgrad/sgemm {x / r:.2f}x"
        rows.append((case, unit, x * scale, t * scale, t / x, extra))

    print(f"threads={args.threads} rounds={args.rounds} (ratio = torch time / xgrad time; > 1: xgrad faster)")
    print(f"{'case':<16}{'unit':<7}{'xgrad':>10}{'torch':>10}{'ratio':>8}  notes")
    for case, unit, x, t, ratio, extra in rows:
        print(f"{case:<16}{unit:<7}{x:>10.3f}{t:>10.3f}{ratio:>8.2f}  {extra}")


if __name__ == "__main__":
    main()
