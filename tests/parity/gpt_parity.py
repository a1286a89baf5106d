"""Parity of the reference GPT with the same architecture in PyTorch (nanoGPT's model.py structure and
parameter names), in both directions:

  1. a checkpoint trained by xgrad loads into the PyTorch model, which reproduces xgrad's logits, loss and
     every parameter's gradient on the same batch (written by `gpt eval --dump`);
  2. weights initialised in PyTorch and written as safetensors load into xgrad, which reproduces PyTorch's
     logits and loss.

    /usr/bin/python3 gpt_parity.py /path/to/gpt WORK_DIR

Exits 77 (reported as skipped by ctest) when PyTorch is not installed.
"""
import copy
import json
import os
import random
import shutil
import struct
import subprocess
import sys

try:
    import torch
    import torch.nn.functional as F
except ImportError as e:
    # CI installs torch and sets XGRAD_REQUIRE_TORCH=1: there a missing or broken torch is a failure.
    print(f"{'FAILED' if os.environ.get('XGRAD_REQUIRE_TORCH') == '1' else 'SKIPPED'}: PyTorch cannot be imported "
          f"({e}; Debian: apt-get install python3-torch)")
    sys.exit(1 if os.environ.get("XGRAD_REQUIRE_TORCH") == "1" else 77)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "gpt"))
from torch_gpt import GPT  # noqa: E402  the model the benchmark times, too

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


# ---- checks -----------------------------------------------------------------------------------------------

failures = []


def compare(what, got, torch32, exact):
    """xgrad's float32 result against the exact value (the same model in float64 on the same inputs): it may
    be off by at most 4 times what PyTorch's float32 result is off (both round the same sums, in orders that
    differ with the BLAS, the vector width and the tiling), plus 8 float32 roundings of the largest value,
    for where PyTorch happens to land exactly. The bound comes from the arithmetic, not from one machine."""
    got, torch32, exact = got.double(), torch32.detach().double(), exact.detach().double()
    err = (got - exact).abs().max().item() if got.numel() else 0.0
    err_torch = (torch32 - exact).abs().max().item() if got.numel() else 0.0
    scale = exact.abs().max().item() if got.numel() else 0.0
    bound = 4 * err_torch + 8 * scale * 2.0 ** -24
    ok = got.shape == exact.shape and err <= bound
    print(f"  {'ok  ' if ok else 'FAIL'} {what}: error {err:.3g}, PyTorch float32's {err_torch:.3g}, bound {bound:.3g} "
          f"(max |value| {scale:.3g})")
    if not ok:
        failures.append(what)


def forward_backward(model, x, y, ignore_index=-100):
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1), ignore_index=ignore_index)
    loss.backward()
    return logits, loss


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
    model64 = copy.deepcopy(model).double()
    logits, loss = forward_backward(model, dump["x"], dump["y"], ignore_index=-1)
    logits64, loss64 = forward_backward(model64, dump["x"], dump["y"], ignore_index=-1)
    compare("logits", dump["logits"], logits, logits64)
    compare("loss", dump["loss"], loss, loss64)
    grads64 = dict(model64.named_parameters())
    for pname, p in model.named_parameters():
        compare(f"grad {pname}", dump["grad." + pname], p.grad, grads64[pname].grad)

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
    fresh64 = copy.deepcopy(fresh).double()
    logits2, loss2 = forward_backward(fresh, dump2["x"], dump2["y"])
    logits2_64, loss2_64 = forward_backward(fresh64, dump2["x"], dump2["y"])
    compare("logits (PyTorch weights in xgrad)", dump2["logits"], logits2, logits2_64)
    compare("loss (PyTorch weights in xgrad)", dump2["loss"], loss2, loss2_64)


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
