"""PyTorch side of the GPT benchmarks: the same GPT (nanoGPT's architecture and parameter layout) in
PyTorch eager, timed the same way as bench_gpt.cpp.

    /usr/bin/python3 bench/torch_gpt.py CONFIG THREADS [train|sample]   -> prints one JSON line
CONFIG is "baby" (4 layers, 128 wide, vocab 65, batch 12 x 64) or "gpt2" (GPT-2 small, batch 4 x 64).
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "gpt"))
import torch_gpt  # noqa: E402  the model the parity test proves equal to xgrad's

# The same configs as bench_gpt.cpp: nanoGPT's baby GPT, and GPT-2 small (vocab padded to 50304).
CONFIGS = {
    "baby": (torch_gpt.config(), 12),
    "gpt2": (torch_gpt.config(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768), 4),
}
SEQ = 64


def main():
    name, threads = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "train"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c, batch = CONFIGS[name]
    model = torch_gpt.GPT(c)
    if mode == "train":
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.99))
        x = torch.randint(0, c["vocab_size"], (batch, SEQ))
        y = torch.randint(0, c["vocab_size"], (batch, SEQ))

        def step():
            loss = model.loss(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        step()
        times = []
        begin = time.perf_counter()
        while len(times) < 5 or time.perf_counter() - begin < 8.0:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        times.sort()
        sec = times[len(times) // 2]
        print(json.dumps({"tokens_per_sec": batch * SEQ / sec, "step_ms": sec * 1e3,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    else:
        model.eval()
        n = 64

        def generate():
            idx = torch.zeros((1, 1), dtype=torch.long)
            with torch.no_grad():
                for _ in range(n):
                    logits = model(idx[:, -c["block_size"]:], last_only=True)
                    nxt = torch.multinomial(F.softmax(logits[:, -1, :], dim=-1), 1)
                    idx = torch.cat([idx, nxt], dim=1)

        generate()  # warm-up, as on xgrad's side: first-call costs are not sampling speed
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            generate()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"tokens_per_sec": n / sorted(times)[1]}))


if __name__ == "__main__":
    main()
