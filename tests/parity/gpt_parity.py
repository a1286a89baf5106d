"""Parity of the reference GPT with the same architecture in PyTorch (nanoGPT's model.py structure and
parameter names), in both directions:

  1. a checkpoint trained by xgrad loads into the PyTorch model, which reproduces xgrad's logits, loss and
     every parameter's gradient on the same batch (written by `gpt eval --dump`);
  2. weights initialised in PyTorch and written as safetensors load into xgrad, which reproduces PyTorch's
     logits and loss.

    /usr/bin/python3 gpt_parity.py /path/to/gpt WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed.
"""
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("SKIPPED: PyTorch is not installed here (Debian: apt-get install python3-torch)")
    sys.exit(77)

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
NAMES = {v: k for k, v in DTYPES.items()}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, e in header.items():
        b, end = e["data_offsets"]
        raw = bytearray(data[base + b:base + end])
        t = torch.frombuffer(raw, dtype=DTYPES[e["dtype"]]) if raw else torch.empty(0, dtype=DTYPES[e["dtype"]])
        tensors[name] = t.reshape(e["shape"]).clone()
    return tensors, meta


def write_safetensors(path, tensors, meta):
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- the model, structured and named as nanoGPT's model.py -----------------------------------------------

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
        self.n_head, self.window = c["n_head"], window
        self.c_attn = nn.Linear(c["n_embd"], 3 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(c["n_embd"], c["n_embd"], bias=c["bias"])

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        i = torch.arange(t).view(t, 1)
        j = torch.arange(t).view(1, t)
        allowed = j <= i
        if self.window > 0:
            allowed = allowed & (j > i - self.window)
        att = F.softmax(att.masked_fill(~allowed, float("-inf")), dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c["n_embd"], 4 * c["n_embd"], bias=c["bias"])
        self.c_proj = nn.Linear(4 * c["n_embd"], c["n_embd"], bias=c["bias"])
        self.approx = "tanh" if c.get("gelu_tanh") else "none"

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate=self.approx))


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

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.size(1)))
        for blk in self.transformer.h:
            x = blk(x)
        return self.lm_head(self.transformer.ln_f(x))


# ---- checks -----------------------------------------------------------------------------------------------

failures = []


def compare(what, got, want, rtol, atol):
    diff = (got - want).abs().max().item() if got.numel() else 0.0
    ok = torch.allclose(got, want, rtol=rtol, atol=atol)
    print(f"  {'ok  ' if ok else 'FAIL'} {what}: max |diff| {diff:.3g} (max |value| {want.abs().max().item() if want.numel() else 0:.3g})")
    if not ok:
        failures.append(what)


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def check_config(gpt, work, name, flags):
    print(f"config {name}: {' '.join(flags)}")
    d = os.path.join(work, name)
    run([gpt, "train", "--data", os.path.join(work, "corpus.txt"), "--out", d, "--max-iters", "30",
         "--eval-interval", "30", "--eval-iters", "2", "--batch-size", "4", "--warmup-iters", "5"] + flags)
    run([gpt, "eval", "--out", d, "--data", os.path.join(work, "corpus.txt"), "--batches", "1", "--batch-size", "3",
         "--dump", os.path.join(d, "dump.safetensors")])
    weights, meta = read_safetensors(os.path.join(d, "model.safetensors"))
    config = json.loads(meta["config"])
    dump, _ = read_safetensors(os.path.join(d, "dump.safetensors"))

    # 1. xgrad's checkpoint in PyTorch: same logits, loss and gradients.
    model = GPT(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert set(missing) == {"lm_head.weight"} and not unexpected, (missing, unexpected)  # tied: stored once
    logits = model(dump["x"])
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), dump["y"].view(-1), ignore_index=-1)
    loss.backward()
    compare("logits", dump["logits"], logits.detach(), 1e-4, 1e-5)
    compare("loss", dump["loss"], loss.detach(), 1e-5, 1e-6)
    for pname, p in model.named_parameters():
        compare(f"grad {pname}", dump["grad." + pname], p.grad, 1e-3, 2e-5)

    # 2. PyTorch's weights in xgrad: same logits and loss.
    torch.manual_seed(7)
    fresh = GPT(config)
    for pname, p in fresh.named_parameters():
        with torch.no_grad():
            p.normal_(0.0, 0.1)
    d2 = d + "_from_torch"
    os.makedirs(d2, exist_ok=True)
    write_safetensors(os.path.join(d2, "model.safetensors"), dict(fresh.state_dict()), meta)  # both tied names
    run([gpt, "eval", "--out", d2, "--data", os.path.join(work, "corpus.txt"), "--batches", "1", "--batch-size", "3",
         "--dump", os.path.join(d2, "dump.safetensors")])
    dump2, _ = read_safetensors(os.path.join(d2, "dump.safetensors"))
    with torch.no_grad():
        logits2 = fresh(dump2["x"])
        loss2 = F.cross_entropy(logits2.view(-1, logits2.size(-1)), dump2["y"].view(-1))
    compare("logits (PyTorch weights in xgrad)", dump2["logits"], logits2, 1e-4, 1e-5)
    compare("loss (PyTorch weights in xgrad)", dump2["loss"], loss2, 1e-5, 1e-6)


def main():
    gpt, work = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    rnd = random.Random(3)
    words = "to be or not that is the question whether tis nobler in mind suffer slings arrows".split()
    with open(os.path.join(work, "corpus.txt"), "w") as f:
        f.write(" ".join(rnd.choice(words) + ("\n" if rnd.random() < 0.1 else "") for _ in range(4000)))
    check_config(gpt, work, "dense", ["--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "24"])
    check_config(gpt, work, "windowed", ["--n-layer", "3", "--n-head", "4", "--n-embd", "32", "--block-size", "16",
                                         "--bias", "false", "--gelu-tanh", "--attention", "alternating", "--window", "5"])
    if failures:
        print(f"{len(failures)} checks failed: {', '.join(failures)}")
        sys.exit(1)
    print("parity with PyTorch: all checks passed")


if __name__ == "__main__":
    main()
