"""The reference GPT in PyTorch: the same architecture as gpt.cpp, structured and named as nanoGPT's
model.py (transformer.wte, transformer.h.0.attn.c_attn, ..., lm_head tied to wte), so the checkpoints of
one load into the other. The parity test (tests/parity/gpt_parity.py) proves the two equal; the benchmark
(bench/torch_gpt.py) times this same model.

The config is the dict stored in a checkpoint's "config" metadata (GPTConfig::to_json).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def config(**overrides):
    """A config with GPTConfig's defaults (the baby GPT), updated with `overrides`."""
    c = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=True,
             gelu_tanh=False, window=0, attention="dense")
    c.update(overrides)
    return c


class LayerNorm(nn.Module):
    def __init__(self, n, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, c, window):
        super().__init__()
        self.n_head = c["n_head"]
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])
        # Which keys each query may see: causal, and within the window when there is one.
        i = torch.arange(c["block_size"]).view(-1, 1)
        j = torch.arange(c["block_size"]).view(1, -1)
        allowed = (j <= i) & (j > i - window) if window > 0 else j <= i
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = F.softmax(att.masked_fill(~self.allowed[:t, :t], float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])
        self.approximate = "tanh" if c.get("gelu_tanh") else "none"

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approximate))


class Block(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        window = {"dense": 0, "window": c["window"], "alternating": c["window"] if layer % 2 == 1 else 0}[c["attention"]]
        self.ln_1, self.attn = LayerNorm(c["n_embd"], c["bias"]), CausalSelfAttention(c, window)
        self.ln_2, self.mlp = LayerNorm(c["n_embd"], c["bias"]), MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c["vocab_size"], c["n_embd"]), wpe=nn.Embedding(c["block_size"], c["n_embd"]),
            h=nn.ModuleList([Block(c, i) for i in range(c["n_layer"])]), ln_f=LayerNorm(c["n_embd"], c["bias"])))
        self.lm_head = nn.Linear(c["n_embd"], c["vocab_size"], bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied, as in nanoGPT

    def forward(self, idx, last_only=False):
        """Logits [B, T, V] for token ids [B, T]; with last_only, only the last position's ([B, 1, V])."""
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for blk in self.transformer.h:
            x = blk(x)
        if last_only:
            x = x[:, [-1], :]
        return self.lm_head(self.transformer.ln_f(x))

    def loss(self, idx, targets, ignore_index=-100):
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=ignore_index)
