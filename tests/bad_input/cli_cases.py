"""Bad input through the gpt command line and crafted files, one row per case: flags out of range, not
numbers, NaN; damaged, hostile or mismatched checkpoints, training states, adapters and corpora. Every row
must end with a non-zero exit and a one-line error naming the problem, within its timeout (nothing may
hang), and must leave every file in the work folder as it was.

    /usr/bin/python3 cli_cases.py /path/to/gpt WORK_DIR

Standard library only. Prints one line per failing case and "N passed, M failed".
"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys

gpt, work = sys.argv[1], sys.argv[2]


def read_st(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def write_st(path, header, blob):
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + blob)


def write_raw(path, data):
    with open(path, "wb") as f:
        f.write(data)


def copy_checkpoint(src, dst, edit_model=None, edit_state=None):
    """A copy of checkpoint folder src in dst, with its model or training state header edited."""
    shutil.copytree(src, dst)
    for name, edit in (("model.safetensors", edit_model), ("train_state.safetensors", edit_state)):
        if edit:
            header, blob = read_st(os.path.join(dst, name))
            blob = edit(header, blob) or blob
            write_st(os.path.join(dst, name), header, blob)


def set_config(**changes):
    def edit(header, _):
        c = json.loads(header["__metadata__"]["config"])
        c.update(changes)
        header["__metadata__"]["config"] = json.dumps(c)
    return edit


def set_meta(key, value):
    def edit(header, _):
        header["__metadata__"][key] = value
    return edit


def add_copies(*pairs):
    """Appends copies of tensors under new names: (existing name, new name), ..."""
    def edit(header, blob):
        for name, new in pairs:
            b, e = header[name]["data_offsets"]
            header[new] = dict(header[name], data_offsets=[len(blob), len(blob) + e - b])
            blob += blob[b:e]
        return blob
    return edit


def set_tensor_values(name, values_i64):
    """Overwrites an int64 tensor's data in place."""
    def edit(header, blob):
        b, e = header[name]["data_offsets"]
        raw = struct.pack(f"<{len(values_i64)}q", *values_i64)
        assert len(raw) == e - b
        return blob[:b] + raw + blob[e:]
    return edit


def nan_weights(header, blob):
    """Every float32 weight NaN: the loss is NaN from the first step."""
    out = bytearray(blob)
    for name, e in header.items():
        if name != "__metadata__" and e["dtype"] == "F32":
            b, end = e["data_offsets"]
            out[b:end] = struct.pack("<f", float("nan")) * ((end - b) // 4)
    return bytes(out)


def setup():
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    os.chdir(work)
    words = "the quick brown fox jumps over a lazy dog and runs far away".split()
    with open("corpus.txt", "w") as f:
        f.write(" ".join(words[(i * 7) % len(words)] + ("\n" if i % 11 == 10 else "") for i in range(3000)))
    tiny = ["--data", "corpus.txt", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
            "--batch-size", "2", "--eval-iters", "1", "--warmup-iters", "1"]
    subprocess.run([gpt, "train", *tiny, "--out", "ck", "--max-iters", "4", "--eval-interval", "2"], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([gpt, "finetune", "--base", "ck", "--data", "corpus.txt", "--out", "ad", "--rank", "2", "--max-iters", "2",
                    "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "2"], check=True, stdout=subprocess.DEVNULL)
    # Crafted checkpoints.
    copy_checkpoint("ck", "huge_embd", edit_model=set_config(n_embd=4611686018427387905, n_head=1))
    copy_checkpoint("ck", "float_embd", edit_model=set_config(n_embd=1e30))
    copy_checkpoint("ck", "neg_layers", edit_model=set_config(n_layer=-2))
    copy_checkpoint("ck", "str_bias", edit_model=set_config(bias="yes"))
    copy_checkpoint("ck", "bad_config_json", edit_model=set_meta("config", "{not json"))
    copy_checkpoint("ck", "no_config", edit_model=lambda h, b: h["__metadata__"].pop("config") and None)
    copy_checkpoint("ck", "bad_iter", edit_model=set_meta("iter", "12abc"))
    copy_checkpoint("ck", "neg_iter", edit_model=set_meta("iter", "-5"))
    copy_checkpoint("ck", "bad_tokenizer", edit_model=set_meta("tokenizer", "[1, 2"))
    copy_checkpoint("ck", "odd_tokenizer", edit_model=set_meta("tokenizer_type", "sentencepiece"))
    copy_checkpoint("ck", "state_iter", edit_state=set_meta("iter", "3"))
    copy_checkpoint("ck", "state_best", edit_state=set_meta("best_val_loss", "low"))
    copy_checkpoint("ck", "state_rng_zero", edit_state=set_tensor_values("rng.default", [0] * 6))
    copy_checkpoint("ck", "state_no_rng", edit_state=lambda h, b: None)
    copy_checkpoint("ck", "state_rank_half", edit_state=add_copies(("rng.batches", "rng.batches.1")))
    copy_checkpoint("ck", "state_rank_gap", edit_state=add_copies(("rng.batches", "rng.batches.2"),
                                                                  ("rng.default", "rng.default.2")))
    copy_checkpoint("ck", "state_rank_name", edit_state=add_copies(("rng.batches", "rng.batches.01")))
    header, blob = read_st("state_no_rng/train_state.safetensors")
    for k in ("rng.batches", "rng.default"):
        header.pop(k)
    # Keep the data tiling exact: the rng words were the file's last tensors or not, rebuild offsets.
    kept, out = {}, b""
    for name, e in sorted(((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]):
        b, end = e["data_offsets"]
        kept[name] = dict(e, data_offsets=[len(out), len(out) + end - b])
        out += blob[b:end]
    kept["__metadata__"] = header["__metadata__"]
    write_st("state_no_rng/train_state.safetensors", kept, out)
    copy_checkpoint("ck", "state_neg_step")
    header, blob = read_st("state_neg_step/train_state.safetensors")
    step_key = next(k for k in header if k.endswith(".step") and k.startswith("optim."))
    b, e = header[step_key]["data_offsets"]
    write_st("state_neg_step/train_state.safetensors", header, blob[:b] + struct.pack("<d", -7.0) + blob[e:])
    copy_checkpoint("ck", "nan_weights", edit_model=nan_weights)
    # Damaged model files.
    os.makedirs("truncated")
    write_raw("truncated/model.safetensors", open("ck/model.safetensors", "rb").read()[:500])
    os.makedirs("huge_header")
    write_raw("huge_header/model.safetensors", struct.pack("<Q", 2 ** 62) + b"{}")
    os.makedirs("nested")
    write_raw("nested/model.safetensors", struct.pack("<Q", 200008) + b"[" * 100004 + b"]" * 100004)
    os.makedirs("dup_keys")
    h = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    write_raw("dup_keys/model.safetensors", struct.pack("<Q", len(h)) + h + b"\0" * 4)
    os.makedirs("fifo")
    os.mkfifo("fifo/model.safetensors")
    os.makedirs("folder/model.safetensors")
    # Adapters.
    shutil.copytree("ad", "ad_overwrites")
    header, blob = read_st("ad_overwrites/adapter.safetensors")
    base_header, base_blob = read_st("ck/model.safetensors")
    b, e = base_header["transformer.wte.weight"]["data_offsets"]
    header["transformer.wte.weight"] = dict(base_header["transformer.wte.weight"], data_offsets=[len(blob), len(blob) + e - b])
    write_st("ad_overwrites/adapter.safetensors", header, blob + base_blob[b:e])
    copy_checkpoint("ad", "ad_bad_rank")
    h, bl = read_st("ad_bad_rank/adapter.safetensors")
    h["__metadata__"]["lora_rank"] = "many"
    write_st("ad_bad_rank/adapter.safetensors", h, bl)
    # A tensor name holding a terminal escape sequence: the error quotes it escaped.
    copy_checkpoint("ck", "esc_name", edit_model=add_copies(("transformer.wte.weight", "evil\x1b[2J\x1b]0;pwned\x07")))
    # GPT-2 vocabularies: a token outside the byte-to-unicode map, a merge of symbols outside it.
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    mapping, n = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + n)
            n += 1
    vocab = {mapping[b]: b for b in range(256)}
    for name, extra, merges in (("bpe_bad_token", {"a\u4e00": 256}, "#version: 0.2\nt h\n"),
                                ("bpe_bad_merge", {"th": 256}, "#version: 0.2\nt h\nt\u4e00 h\n"),
                                ("bpe_bad_line", {"th": 256}, "#version: 0.2\nt h x\n")):
        os.makedirs(name)
        with open(os.path.join(name, "encoder.json"), "w", encoding="utf-8") as f:
            json.dump(dict(vocab, **extra), f)
        with open(os.path.join(name, "vocab.bpe"), "w", encoding="utf-8") as f:
            f.write(merges)
    # Corpora.
    write_raw("overlong.txt", b"valid text " * 50 + b"\xc0\xaf" + b" more text" * 50)
    write_raw("surrogate.txt", b"valid text " * 50 + b"\xed\xa0\x80" + b" more" * 50)
    write_raw("truncated_utf8.txt", b"valid text " * 50 + b"\xe2\x82")
    write_raw("empty.txt", b"")
    write_raw("tiny.txt", b"the fox")
    os.mkfifo("fifo.txt")


TRAIN = ["train", "--data", "corpus.txt", "--out", "new"]
SAMPLE = ["sample", "--out", "ck"]
EVAL = ["eval", "--out", "ck", "--data", "corpus.txt", "--batches", "1"]
FINETUNE = ["finetune", "--base", "ck", "--data", "corpus.txt", "--out", "ft_new", "--max-iters", "1"]
RESUME = ["train", "--data", "corpus.txt", "--max-iters", "8", "--resume", "--eval-interval", "2", "--eval-iters", "1",
          "--batch-size", "2", "--out"]

CASES = [
    # ---- train flags ----
    ("--batch-size 0", "--batch-size is 0", TRAIN + ["--batch-size", "0"]),
    ("--batch-size negative", "--batch-size is -1", TRAIN + ["--batch-size", "-1"]),
    ("--batch-size huge", "--batch-size is 1152921504606846977", TRAIN + ["--batch-size", "1152921504606846977"]),
    ("--batch-size not a number", "--batch-size", TRAIN + ["--batch-size", "twelve"]),
    ("--grad-accum 0", "--grad-accum is 0", TRAIN + ["--grad-accum", "0"]),
    ("--max-iters negative", "--max-iters is -1", TRAIN + ["--max-iters", "-1"]),
    ("--lr nan", "--lr is nan", TRAIN + ["--lr", "nan"]),
    ("--lr inf", "--lr is inf", TRAIN + ["--lr", "inf"]),
    ("--lr negative", "--lr is -0.1", TRAIN + ["--lr", "-0.1"]),
    ("--min-lr negative", "--min-lr is -1", TRAIN + ["--min-lr", "-1"]),
    ("--min-lr above --lr", "--min-lr is 0.5", TRAIN + ["--min-lr", "0.5"]),
    ("--weight-decay negative", "--weight-decay is -0.1", TRAIN + ["--weight-decay", "-0.1"]),
    ("--weight-decay nan", "--weight-decay is nan", TRAIN + ["--weight-decay", "nan"]),
    ("--beta1 1", "--beta1 is 1", TRAIN + ["--beta1", "1"]),
    ("--beta2 negative", "--beta2 is -0.5", TRAIN + ["--beta2", "-0.5"]),
    ("--grad-clip negative", "--grad-clip is -1", TRAIN + ["--grad-clip", "-1"]),
    ("--warmup-iters negative", "--warmup-iters is -3", TRAIN + ["--warmup-iters", "-3"]),
    ("--lr-decay-iters huge", "--lr-decay-iters is", TRAIN + ["--lr-decay-iters", "9223372036854775807"]),
    ("--eval-interval 0", "--eval-interval is 0", TRAIN + ["--eval-interval", "0"]),
    ("--eval-iters 0", "--eval-iters is 0", TRAIN + ["--eval-iters", "0"]),
    ("--log-interval 0", "--log-interval is 0", TRAIN + ["--log-interval", "0"]),
    ("--threads negative", "--threads is -2", TRAIN + ["--threads", "-2"]),
    ("--threads huge", "--threads is 5000", TRAIN + ["--threads", "5000"]),
    ("--n-embd huge", "n_embd is 4611686018427387905", TRAIN + ["--n-embd", "4611686018427387905", "--n-head", "1"]),
    ("--n-layer 0", "n_layer is 0", TRAIN + ["--n-layer", "0"]),
    ("--n-head 0", "n_head is 0", TRAIN + ["--n-head", "0"]),
    ("--n-head not dividing", "multiple of n_head", TRAIN + ["--n-embd", "30", "--n-head", "4"]),
    ("--block-size 0", "block_size is 0", TRAIN + ["--block-size", "0"]),
    ("--block-size huge", "block_size is", TRAIN + ["--block-size", "99999999999"]),
    ("--dropout 1", "dropout must be in [0, 1)", TRAIN + ["--dropout", "1"]),
    ("--dropout nan", "dropout must be in [0, 1)", TRAIN + ["--dropout", "nan"]),
    ("--window negative", "window is -1", TRAIN + ["--window", "-1"]),
    ("--attention unknown", "attention must be dense, window or alternating", TRAIN + ["--attention", "sparse"]),
    ("window pattern without a window", "needs --window > 0", TRAIN + ["--attention", "window"]),
    ("a model too big for memory", "more than this machine's",
     TRAIN + ["--n-layer", "96", "--n-embd", "12288", "--n-head", "96", "--block-size", "2048"]),
    ("a batch too big for memory", "more than this machine's", TRAIN + ["--batch-size", "1000000", "--block-size", "1024"]),
    ("--tokenizer unknown", "--tokenizer must be char or gpt2", TRAIN + ["--tokenizer", "wordpiece"]),
    ("--bpe-dir missing", "GPT-2's BPE files are not in \"nowhere\"", TRAIN + ["--tokenizer", "gpt2", "--bpe-dir", "nowhere"]),
    ("unknown flag", "--learning-rate", TRAIN + ["--learning-rate", "1"]),
    ("--checkpoint-activations not a boolean", "--checkpoint-activations", TRAIN + ["--checkpoint-activations=maybe"]),
    ("--detect-anomaly not a boolean", "--detect-anomaly", TRAIN + ["--detect-anomaly=perhaps"]),
    ("--dtype unknown", "--dtype must be float32 or bf16, got \"fp8\"", TRAIN + ["--dtype", "fp8"]),
    ("--zero-optimizer not a boolean", "--zero-optimizer", TRAIN + ["--zero-optimizer=perhaps"]),
    ("--comm-thread not a boolean", "--comm-thread", TRAIN + ["--comm-thread", "sometimes"]),
    ("--bucket-mb zero", "--bucket-mb is 0", TRAIN + ["--bucket-mb", "0"]),
    ("--bucket-mb NaN", "--bucket-mb is nan", TRAIN + ["--bucket-mb", "nan"]),
    ("--dist-timeout negative", "--dist-timeout is -1", TRAIN + ["--dist-timeout", "-1"]),
    ("--dist-timeout NaN", "--dist-timeout is nan", TRAIN + ["--dist-timeout", "nan"]),
    ("--bucket-mb too big", "--bucket-mb is 1000000000, outside", TRAIN + ["--bucket-mb", "1e9"]),
    ("--dtype not a word", "--dtype must be float32 or bf16", TRAIN + ["--dtype", "16"]),
    # ---- environment ----
    ("XGRAD_GEMM unknown", "XGRAD_GEMM is \"fastest\"; expected auto, openblas or onednn",
     ["ENV:XGRAD_GEMM=fastest", "eval", "--out", "ck", "--data", "corpus.txt", "--batches", "1"]),
    # ---- corpora ----
    ("data missing", "does not exist", ["train", "--data", "missing.txt", "--out", "new"]),
    ("data empty", "is empty", ["train", "--data", "empty.txt", "--out", "new"]),
    ("data too small", "too small", ["train", "--data", "tiny.txt", "--out", "new"]),
    ("data a folder", "directory", ["train", "--data", "ck", "--out", "new"]),
    ("data a FIFO", "not a regular file", ["train", "--data", "fifo.txt", "--out", "new"]),
    ("data with an overlong UTF-8 form", "overlong form", ["train", "--data", "overlong.txt", "--out", "new"]),
    ("data with a UTF-16 surrogate", "surrogate", ["train", "--data", "surrogate.txt", "--out", "new"]),
    ("data ending inside a character", "invalid UTF-8 at byte 550", ["train", "--data", "truncated_utf8.txt", "--out", "new"]),
    # ---- sample flags ----
    ("--temperature negative", "--temperature is -1", SAMPLE + ["--temperature", "-1"]),
    ("--temperature nan", "--temperature is nan", SAMPLE + ["--temperature", "nan"]),
    ("--top-p 0", "--top-p is 0", SAMPLE + ["--top-p", "0"]),
    ("--top-p above 1", "--top-p is 1.5", SAMPLE + ["--top-p", "1.5"]),
    ("--top-p nan", "--top-p is nan", SAMPLE + ["--top-p", "nan"]),
    ("--top-k negative", "--top-k is -3", SAMPLE + ["--top-k", "-3"]),
    ("--num-tokens negative", "--num-tokens is -3", SAMPLE + ["--num-tokens", "-3"]),
    ("--num-tokens huge", "--num-tokens is", SAMPLE + ["--num-tokens", "99999999999"]),
    ("--threads negative (sample)", "--threads is -1", SAMPLE + ["--threads", "-1"]),
    ("prompt outside the vocabulary", "not in the vocabulary", SAMPLE + ["--prompt", "XYZ"]),
    ("prompt of invalid UTF-8", "invalid UTF-8", SAMPLE + ["--prompt", "\udcc0\udcaf"]),
    ("--cache not a boolean", "--cache", SAMPLE + ["--cache", "maybe"]),
    ("sample from NaN weights", "are not finite, so there is no distribution", ["sample", "--out", "nan_weights"]),
    ("greedy sample from NaN weights", "not finite", ["sample", "--out", "nan_weights", "--temperature", "0"]),
    # ---- eval and finetune flags ----
    ("--batches 0", "--batches is 0", EVAL[:-1] + ["0"]),
    ("eval --batch-size huge", "--batch-size is", EVAL + ["--batch-size", "99999999999"]),
    ("eval --dump into a missing folder", "cannot write", EVAL + ["--dump", "nowhere/x.safetensors"]),
    ("--rank 0", "--rank is 0", FINETUNE + ["--rank", "0"]),
    ("--rank huge", "--rank is", FINETUNE + ["--rank", "99999999"]),
    ("--alpha 0", "--alpha is 0", FINETUNE + ["--alpha", "0"]),
    ("--alpha nan", "--alpha is nan", FINETUNE + ["--alpha", "nan"]),
    ("--lora-dropout 1", "--lora-dropout is 1", FINETUNE + ["--lora-dropout", "1"]),
    ("train --max-iters 0 names no checkpoint", None,
     TRAIN + ["--max-iters", "0", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8",
              "--batch-size", "2", "--eval-iters", "1"],
     {"./new", "./new/metrics.csv", "./new/loss.png", "./new/loss.gnuplot"}),
    ("finetune --max-iters 0 trains nothing", "trains nothing", FINETUNE[:-1] + ["0"]),
    ("finetune of the tied lm_head", "lm_head.weight is tied to transformer.wte.weight", FINETUNE + ["--targets", "lm_head"]),
    ("finetune base missing", "no checkpoint", ["finetune", "--base", "nowhere", "--data", "corpus.txt", "--out", "ft_new"]),
    # ---- damaged and hostile checkpoints ----
    ("no checkpoint", "no checkpoint", ["sample", "--out", "nowhere"]),
    ("truncated model file", "truncated", ["sample", "--out", "truncated"]),
    ("header size past the file", "header size", ["sample", "--out", "huge_header"]),
    ("deeply nested header", "nests deeper", ["sample", "--out", "nested"]),
    ("duplicate keys in the header", "twice", ["sample", "--out", "dup_keys"]),
    ("checkpoint is a FIFO", "not a regular file", ["sample", "--out", "fifo"]),
    ("checkpoint is a folder", "not a regular file", ["sample", "--out", "folder"]),
    ("config with a huge n_embd (sample)", "n_embd is 4611686018427387905", ["sample", "--out", "huge_embd"]),
    ("config with a huge n_embd (eval)", "n_embd is 4611686018427387905", ["eval", "--out", "huge_embd", "--data", "corpus.txt"]),
    ("config with a huge n_embd (finetune)", "n_embd is 4611686018427387905",
     ["finetune", "--base", "huge_embd", "--data", "corpus.txt", "--out", "ft_new"]),
    ("config with a float size", "\"n_embd\" must be an integer", ["sample", "--out", "float_embd"]),
    ("config with negative layers", "n_layer is -2", ["sample", "--out", "neg_layers"]),
    ("config with a string bias", "\"bias\" must be true or false", ["sample", "--out", "str_bias"]),
    ("config not JSON", "not valid JSON", ["sample", "--out", "bad_config_json"]),
    ("config missing", "no \"config\" metadata", ["sample", "--out", "no_config"]),
    ("iteration not a number", "\"iter\" is \"12abc\"", ["sample", "--out", "bad_iter"]),
    ("negative iteration", "\"iter\" is \"-5\"", ["sample", "--out", "neg_iter"]),
    ("tokenizer not JSON", "char tokenizer", ["sample", "--out", "bad_tokenizer"]),
    ("unknown tokenizer type", "unknown tokenizer type", ["sample", "--out", "odd_tokenizer"]),
    ("a tensor name with an escape sequence", "evil\\x1b[2J\\x1b]0;pwned\\x07", ["sample", "--out", "esc_name"]),
    ("gpt2 vocabulary: a token outside the byte map", "outside GPT-2's byte-to-unicode map",
     TRAIN + ["--tokenizer", "gpt2", "--bpe-dir", "bpe_bad_token"]),
    ("gpt2 merges: a symbol outside the byte map", "vocab.bpe line 3", TRAIN + ["--tokenizer", "gpt2", "--bpe-dir", "bpe_bad_merge"]),
    ("gpt2 merges: three symbols on a line", "vocab.bpe line 2", TRAIN + ["--tokenizer", "gpt2", "--bpe-dir", "bpe_bad_line"]),
    # ---- training states ----
    ("resume, state of another iteration", "no training state matches", RESUME + ["state_iter"]),
    ("resume, best loss not a number", "\"best_val_loss\" is \"low\"", RESUME + ["state_best"]),
    ("resume, all-zero generator", "all-zero", RESUME + ["state_rng_zero"]),
    ("resume, generators missing", "random generators' state is missing", RESUME + ["state_no_rng"]),
    ("resume, a rank's generators incomplete", "the generators of rank 1 are incomplete", RESUME + ["state_rank_half"]),
    ("resume, generators of rank 2 without rank 1", "the generators of rank 1 are incomplete", RESUME + ["state_rank_gap"]),
    ("resume, rank suffix not a rank", "unexpected entry \"rng.batches.01\"", RESUME + ["state_rank_name"]),
    ("resume, negative optimizer step", "not a step count", RESUME + ["state_neg_step"]),
    ("resume, model flag contradicts the checkpoint", "n_layer 1, but --n-layer 4", RESUME + ["ck", "--n-layer", "4"]),
    ("resume without a checkpoint", "no checkpoint", RESUME + ["nowhere"]),
    ("resume of NaN weights stops and keeps the checkpoint", "training diverged", RESUME + ["nan_weights"],
     {"./nan_weights/metrics.csv", "./nan_weights/loss.png", "./nan_weights/loss.gnuplot"}),
    ("--detect-anomaly names the op and layer of the first NaN", "was already non-finite",
     RESUME + ["nan_weights", "--detect-anomaly"], {"./nan_weights/metrics.csv"}),
    ("--detect-anomaly names the parameter", "\"transformer.w", RESUME + ["nan_weights", "--detect-anomaly"],
     {"./nan_weights/metrics.csv"}),
    # ---- adapters ----
    ("adapter missing", "no adapter", ["sample", "--adapter", "nowhere"]),
    ("adapter replacing base weights", "must not replace base weights", ["sample", "--adapter", "ad_overwrites"]),
    ("adapter rank not a number", "\"lora_rank\" is \"many\"", ["sample", "--adapter", "ad_bad_rank"]),
]


def snapshot():
    out = {}
    for root, dirs, files in os.walk("."):
        for name in files:
            p = os.path.join(root, name)
            if os.path.isfile(p) and not name.startswith("err."):
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
        out.update({os.path.join(root, d): "dir" for d in dirs})
    return out


def main():
    setup()
    before = snapshot()
    failed = 0
    for name, fragment, args, *allowed in CASES:
        allowed = allowed[0] if allowed else set()
        env = dict(os.environ)  # a leading "ENV:NAME=value" sets an environment variable for the case
        while args and args[0].startswith("ENV:"):
            key, _, value = args[0][4:].partition("=")
            env[key], args = value, args[1:]
        try:
            r = subprocess.run([gpt, *args], capture_output=True, timeout=60, errors="surrogateescape", env=env)
        except subprocess.TimeoutExpired:
            print(f"FAIL {name}: no answer within 60 s")
            failed += 1
            continue
        lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
        problems = []
        if any(ord(c) < 32 and c not in "\n" or ord(c) == 127 for c in r.stderr):
            problems.append("a control character reached the terminal")
        if fragment is None:  # a run that succeeds, and names no file it did not write
            if r.returncode != 0:
                problems.append(f"exit code {r.returncode}")
            if "checkpoint in" in r.stdout or "no checkpoint written" not in r.stdout:
                problems.append(f"it printed: {r.stdout.strip()[-200:]}")
        else:
            if r.returncode == 0:
                problems.append("exit code 0")
            if r.returncode < 0:
                problems.append(f"killed by signal {-r.returncode}")
            if len(lines) != 1:
                problems.append(f"{len(lines)} lines of error output")
            if fragment not in r.stderr:
                problems.append(f"no '{fragment}' in the error")
        after = snapshot()
        changed = sorted(k for k in set(after) | set(before) if after.get(k) != before.get(k))
        if set(changed) - allowed:
            problems.append(f"files changed: {', '.join(changed[:5])}")
        before = after
        if problems:
            failed += 1
            print(f"FAIL {name}: {'; '.join(problems)}\n  stderr: {r.stderr.strip()[:400]}")
    print(f"{len(CASES) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
