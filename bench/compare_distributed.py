"""Data-parallel training on this machine: all-reduce bandwidth against raw MPI_Allreduce, and GPT training
tokens/s and memory per rank at np=1 and np=2, compute threads split so the cores are not oversubscribed.

    /usr/bin/python3 bench/compare_distributed.py [--build build] [--configs baby,gpt2] [--cores 2]

np=1 runs one process with CORES threads; np=2 runs two ranks with CORES/2 threads each, every rank on a
batch of the single-process size, so a step of np=2 trains on twice the tokens. "overlap" reduces gradient
buckets on a communication thread during backward, "sync" in the backward thread; "zero" shards AdamW.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
seen = set()


def run(cmd, threads, np):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads), **MPI_ENV)
    if np > 1:
        cmd = ["mpirun", "-np", str(np), "--bind-to", "none", "--mca", "btl", "self,vader"] + cmd
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, timeout=900)
    for line in out.stderr.splitlines():  # the machine, once
        if line.startswith("#") and line.split(";")[0] not in seen:
            seen.add(line.split(";")[0])
            print(line.rsplit(";", 1)[0], flush=True)
    return [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--configs", default="baby,gpt2")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    exe = os.path.join(args.build, "bench", "bench_distributed")
    print("all-reduce, 2 ranks: xgrad Communicator::all_reduce vs MPI_Allreduce on the same bytes")
    print(f"{'MB':>6}{'xgrad GB/s':>12}{'MPI GB/s':>10}{'ratio':>8}")
    for r in run([exe, "allreduce"], 1, 2):
        print(f"{r['mb']:>6}{r['xgrad_gb_s']:>12.2f}{r['mpi_gb_s']:>10.2f}{r['ratio']:>8.3f}", flush=True)
    half = max(1, args.cores // 2)
    print(f"\nGPT training ({args.cores} cores): np=1 x {args.cores} threads vs np=2 x {half} threads")
    print(f"{'config':<8}{'run':<22}{'tok/s':>10}{'vs np=1':>9}{'step ms':>10}{'MB/rank':>9}")
    runs = [("np=1", 1, args.cores, []), ("np=2 overlap", 2, half, []), ("np=2 sync", 2, half, ["sync"]),
            ("np=2 overlap + zero", 2, half, ["zero"])]
    for cfg in args.configs.split(","):
        results = {label: [] for label, *_ in runs}
        for _ in range(args.rounds):  # interleaved, medians reported
            for label, np, threads, extra in runs:
                results[label].append(run([exe, "train", cfg, str(threads)] + extra, threads, np)[0])
        base = statistics.median(r["tokens_per_sec"] for r in results["np=1"])
        for label, *_ in runs:
            rs = results[label]
            tok = statistics.median(r["tokens_per_sec"] for r in rs)
            print(f"{cfg:<8}{label:<22}{tok:>10.1f}{tok / base:>9.2f}"
                  f"{statistics.median(r['step_ms'] for r in rs):>10.1f}{max(r['peak_mb_per_rank'] for r in rs):>9.0f}",
                  flush=True)

if __name__ == "__main__":
    main()
