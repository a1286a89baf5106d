"""examples/cnn against the same CNN in PyTorch on the same Fashion-MNIST images, side by side in one run:
training images/s (one epoch on --limit images each) and their ratio.

    /usr/bin/python3 bench/compare_cnn.py [--build build] [--data data/fashion-mnist] [--threads 2] [--limit 20000]

Needs Debian's python3-torch (bash scripts/setup.sh --torch). A ratio > 1 means xgrad is faster.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def read_idx(path):
    with open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def torch_images_per_s(data, limit, threads, batch=64, lr=2e-3):
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    x = (read_idx(os.path.join(data, "train-images-idx3-ubyte"))[:limit].float() / 255 - 0.2860) / 0.3530
    x = x.unsqueeze(1)
    y = read_idx(os.path.join(data, "train-labels-idx1-ubyte"))[:limit].long()
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.3), nn.Linear(128, 10))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = (limit + batch - 1) // batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, cycle_momentum=False)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch, shuffle=True)
    start = time.perf_counter()
    for xb, yb in loader:
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return limit / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--data", default=os.path.join(HERE, "..", "data", "fashion-mnist"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=20000)
    args = ap.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    out = subprocess.run([os.path.join(args.build, "examples", "cnn"), "--data", args.data, "--epochs", "1", "--limit",
                          str(args.limit), "--threads", str(args.threads)], check=True, capture_output=True, text=True, env=env).stdout
    header = out.splitlines()[0]
    xg = float(re.search(r"([0-9.]+) images/s", out).group(1))
    tr = torch_images_per_s(args.data, args.limit, args.threads)
    print(f"{header}\nthreads={args.threads}, {args.limit} images, batch 64: xgrad {xg:.0f} images/s, "
          f"PyTorch {torch.__version__} {tr:.0f} images/s, ratio (xgrad / PyTorch) {xg / tr:.2f}")


if __name__ == "__main__":
    sys.exit(main())
