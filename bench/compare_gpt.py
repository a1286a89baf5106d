"""Training-step and sampling speed of the reference GPT, xgrad vs PyTorch eager, side by side.

    /usr/bin/python3 bench/compare_gpt.py [--build build] [--threads 2] [--rounds 2] [--configs baby,gpt2]
                                          [--modes train,sample,sample-nocache]

Each round runs xgrad then PyTorch for each config (interleaved), with the same thread count for BLAS
and torch. Prints tokens/s (median over rounds), the ratio (> 1: xgrad faster) and peak memory. Sampling
generates 64 tokens from one; "sample" uses xgrad's key/value cache, "sample-nocache" does not.
--torch-best CONFIGS also runs PyTorch's training step at every split of the threads between its own
pool and OpenBLAS's (1..THREADS each) and adds a row against the fastest.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, threads, blas_threads=None):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(blas_threads or threads))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default="baby,gpt2")
    ap.add_argument("--modes", default="train,sample,sample-nocache")
    ap.add_argument("--torch-best", default="", help="configs to compare with PyTorch's fastest thread split")
    args = ap.parse_args()
    xg = os.path.join(args.build, "bench", "bench_gpt")
    pt = [sys.executable, os.path.join(HERE, "torch_gpt.py")]
    print(f"threads={args.threads} rounds={args.rounds}; ratio = xgrad tokens/s / torch tokens/s")
    print(f"{'config':<8}{'mode':<18}{'xgrad tok/s':>13}{'torch tok/s':>13}{'ratio':>8}{'xgrad MB':>10}{'torch MB':>10}")
    for cfg in args.configs.split(","):
        for mode in args.modes.split(","):
            xs, ts = [], []
            for _ in range(args.rounds):
                xs.append(run([xg, cfg, str(args.threads), mode], args.threads))
                # PyTorch's side (nanoGPT's generate) has no cache: both sampling rows compare against it.
                # PyTorch's side is float32 eager: bf16 and checkpointed rows compare against it too.
                ts.append(run(pt + [cfg, str(args.threads), "train" if mode.startswith("train") else "sample"],
                              args.threads))
            if mode.startswith("train") and "cpu" in xs[0]:
                gf = statistics.median(r["gflops"] for r in xs)
                pk = statistics.median(r["sgemm_peak_gflops"] for r in xs)
                bk = statistics.median(r["bf16_gemm_peak_gflops"] for r in xs)
                print(f"# {xs[0]['cpu']}; GEMM {xs[0]['gemm']}; sgemm peak {pk:.0f}, bf16 GEMM peak {bk:.0f} GFLOP/s; "
                      f"{cfg} {mode} step {gf:.0f} GFLOP/s = {100 * gf / (bk if 'bf16' in mode else pk):.0f}% of the "
                      f"{'bf16 GEMM' if 'bf16' in mode else 'sgemm'} peak", flush=True)
            x = statistics.median(r["tokens_per_sec"] for r in xs)
            t = statistics.median(r["tokens_per_sec"] for r in ts)
            xm = max(r.get("peak_mb", 0) for r in xs)
            tm = max(r.get("peak_mb", 0) for r in ts)
            mem = f"{xm:>10.0f}{tm:>10.0f}" if mode.startswith("train") else ""
            print(f"{cfg:<8}{mode:<18}{x:>13.1f}{t:>13.1f}{x / t:>8.2f}{mem}", flush=True)
            if mode == "train" and cfg in args.torch_best.split(","):
                best, where = 0.0, ""
                for tt in range(1, args.threads + 1):
                    for bt in range(1, args.threads + 1):
                        runs = [run(pt + [cfg, str(tt), "train"], tt, bt)["tokens_per_sec"] for _ in range(args.rounds)]
                        if statistics.median(runs) > best:
                            best, where = statistics.median(runs), f"{tt} torch + {bt} BLAS threads"
                print(f"{cfg:<8}{'train vs best':<18}{x:>13.1f}{best:>13.1f}{x / best:>8.2f}   (PyTorch's best: {where})",
                      flush=True)


if __name__ == "__main__":
    main()
