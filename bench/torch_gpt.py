"""PyTorch side of the GPT benchmarks: the same GPT (nanoGPT's architecture and parameter layout) in
PyTorch eager, timed the same way as bench_gpt.cpp.

    /usr/bin/python3 bench/torch_gpt.py CONFIG THREADS [train|sample]   -> prints one JSON line
CONFIG is "baby" (4 layers, 128 wide, vocab 65, batch 12 x 64) or "gpt2" (GPT-2 small, batch 4 x 64).
"""
import json
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "baby": dict(vocab=65, block=64, layers=4, heads=4, embd=128, batch=12),
    "gpt2": dict(vocab=50304, block=1024, layers=12, heads=12, embd=768, batch=4),
}
SEQ = 64


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c["heads"]
        self.c_attn = nn.Linear(c["embd"], 3 * c["embd"])
        self.c_proj = nn.Linear(c["embd"], c["embd"])
        self.register_buffer("mask", torch.tril(torch.ones(c["block"], c["block"])).view(1, 1, c["block"], c["block"]))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(c["embd"]), Attention(c), nn.LayerNorm(c["embd"])
        self.c_fc, self.c_proj = nn.Linear(c["embd"], 4 * c["embd"]), nn.Linear(4 * c["embd"], c["embd"])

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c["vocab"], c["embd"]), nn.Embedding(c["block"], c["embd"])
        self.h = nn.ModuleList([Block(c) for _ in range(c["layers"])])
        self.ln_f = nn.LayerNorm(c["embd"])
        self.lm_head = nn.Linear(c["embd"], c["vocab"], bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for blk in self.h:
            x = blk(x)
        if targets is None:  # inference: only the last position's logits, as nanoGPT does
            return self.lm_head(self.ln_f(x[:, [-1], :]))
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    name, threads = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "train"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    c = CONFIGS[name]
    model = GPT(c)
    if mode == "train":
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=1e-3, betas=(0.9, 0.99))
        x = torch.randint(0, c["vocab"], (c["batch"], SEQ))
        y = torch.randint(0, c["vocab"], (c["batch"], SEQ))

        def step():
            loss = model(x, y)
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
        print(json.dumps({"tokens_per_sec": c["batch"] * SEQ / sec, "step_ms": sec * 1e3,
                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    else:
        model.eval()
        idx = torch.zeros((1, 1), dtype=torch.long)
        n = 64
        with torch.no_grad():
            t0 = time.perf_counter()
            for _ in range(n):
                logits = model(idx[:, -c["block"]:])
                nxt = torch.multinomial(F.softmax(logits[:, -1, :], dim=-1), 1)
                idx = torch.cat([idx, nxt], dim=1)
            sec = time.perf_counter() - t0
        print(json.dumps({"tokens_per_sec": n / sec}))


if __name__ == "__main__":
    main()
