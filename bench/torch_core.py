"""PyTorch side of the core benchmarks (see bench_core.cpp for the cases).

    /usr/bin/python3 bench/torch_core.py CASE THREADS  -> prints the median seconds per iteration
"""
import sys
import time

import torch

CHAIN = 1000


def median_seconds(f, min_total=1.0):
    f()
    samples = []
    begin = time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - begin < min_total:
        t0 = time.perf_counter()
        f()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return samples[len(samples) // 2]


def shape_of(name):
    return (12, 64, 128, 512) if "baby" in name else (4, 64, 768, 3072)


def main():
    name, threads = sys.argv[1], int(sys.argv[2])
    torch.set_num_threads(threads)
    if name in ("op_forward", "op_fwd_bwd"):
        x = torch.randn(16, requires_grad=True)
        bwd = name == "op_fwd_bwd"

        def chain():
            y = x
            for _ in range(CHAIN // 2):
                y = y * 1.0001 + 0.5
            if bwd:
                y.sum().backward()

        seconds = median_seconds(chain) / CHAIN
    elif name.startswith("linear_"):
        b, t, c, d = shape_of(name)
        x = torch.randn(b, t, c, requires_grad=True)
        w = torch.randn(d, c, requires_grad=True)
        g = torch.randn(b, t, d)

        def step():
            x.grad = None
            w.grad = None
            torch.matmul(x, w.t()).backward(g)

        seconds = median_seconds(step)
    elif name == "conv2d_3x3":
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(32, 8, 28, 28, generator=gen, requires_grad=True)
        w = torch.randn(8, 8, 3, 3, generator=gen, requires_grad=True)
        b = torch.randn(8, generator=gen, requires_grad=True)
        g = torch.randn(32, 8, 28, 28, generator=gen)

        def step():
            x.grad = w.grad = b.grad = None
            torch.nn.functional.conv2d(x, w, b, padding=1).backward(g)

        seconds = median_seconds(step)
    elif name.startswith("func_"):
        # functorch (bundled with torch 1.13; torch.func since 2.0): jvp in true forward mode, hvp as
        # forward-over-reverse, the fastest forms PyTorch offers.
        import functorch
        gen = torch.Generator().manual_seed(0)
        w1, w2 = (torch.randn(256, 256, generator=gen) * 0.06 for _ in range(2))
        x, v = (torch.randn(64, 256, generator=gen) for _ in range(2))

        def mlp(inp):
            return torch.tanh(torch.tanh(inp @ w1.t()) @ w2.t())

        def energy(inp):
            y = mlp(inp)
            return (y * y).sum()

        if name == "func_vjp":
            def step():
                out, fn = functorch.vjp(mlp, x)
                fn(v)
        elif name == "func_jvp":
            def step():
                functorch.jvp(mlp, (x,), (v,))
        else:
            def step():
                functorch.jvp(functorch.grad(energy), (x,), (v,))
        seconds = median_seconds(step)
    elif name == "attention_1024":
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 12, 1024, 64, generator=gen, requires_grad=True) for _ in range(3))
        g = torch.randn(1, 12, 1024, 64, generator=gen)

        mask = torch.tril(torch.ones(1024, 1024, dtype=torch.bool))

        def step():  # nanoGPT's attention without flash (PyTorch 1.13 has no fused one)
            q.grad = k.grad = v.grad = None
            att = (q @ k.transpose(-2, -1)) * (1.0 / 8.0)
            att = torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            (att @ v).backward(g)

        seconds = median_seconds(step)
    elif name == "attention_baby":
        gen = torch.Generator().manual_seed(0)
        qkv = torch.randn(12, 64, 3 * 128, generator=gen, requires_grad=True)
        g = torch.randn(12, 64, 128, generator=gen)
        mask = torch.tril(torch.ones(64, 64, dtype=torch.bool))

        def step():  # nanoGPT's CausalSelfAttention after c_attn, without flash
            qkv.grad = None
            q, k, v = (t.view(12, 64, 4, 32).transpose(1, 2) for t in qkv.split(128, dim=2))
            att = (q @ k.transpose(-2, -1)) * (1.0 / 32 ** 0.5)
            att = torch.softmax(att.masked_fill(~mask, float("-inf")), dim=-1)
            (att @ v).transpose(1, 2).contiguous().view(12, 64, 128).backward(g)

        seconds = median_seconds(step)
    else:
        raise SystemExit(f"torch_core.py: unknown case {name}")
    print(f"{seconds:.9f}")


if __name__ == "__main__":
    main()
