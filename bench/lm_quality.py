#!/usr/bin/env python3
"""Held-out perplexity of a small byte-level transformer LM after every
pruning and quantization method, all through the real bonsai-server.

Trains a 4-layer, d=256 decoder on the text of Debian's `fortunes` package
(a fixed seed, one torch thread, so a rerun gives the same weights; they are
cached under --cache-dir so reruns skip the training), exports it to
safetensors with Hugging Face-style tensor names, writes one calibration
file, compresses the model with each row's method through bonsai-server
(started here on a free loopback port) and the Python client, loads every
output back into torch and measures perplexity per byte on held-out
fortunes. The embeddings and the LM head stay dense: the server's default
selection leaves `embed*` and `lm_head` tensors alone, and the script checks
that they come back bit for bit.

    apt-get install fortunes   # /usr/share/games/fortunes
    PYTHONPATH=client/python /usr/bin/python3 bench/lm_quality.py \\
        --server build/bin/bonsai-server --out docs/results.md

--out replaces only this script's section of the file (bench/results_doc.py).
The last line printed is a JSON summary (bench/run_all.py reads it).
--quick trains a 1-layer model for a few steps and runs four rows: a check of
the plumbing in about a minute, not a result. --self-check tests the script's
own checkers and references in seconds, with no server and no training (every
run does this first).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import math
import os
import sys
import tempfile
import time
import zlib
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "client", "python"))
import bonsai  # noqa: E402
from bonsai import calibration, safetensors_io  # noqa: E402
import torch_gptq  # noqa: E402
import torch_sparsegpt  # noqa: E402
from quality_results import Server, h_error  # noqa: E402
from results_doc import write_section  # noqa: E402

CORPUS_DIR = "/usr/share/games/fortunes"
SECTION = "lm_quality"
THREADS = 1  # fixed, so that training and evaluation give the same floats on every run


@dataclasses.dataclass(frozen=True)
class Config:
    layers: int = 4
    d_model: int = 256
    heads: int = 4
    d_ff: int = 1024
    context: int = 128
    seed: int = 0
    steps: int = 1000
    batch: int = 16
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.1
    heldout_every: int = 10         # a fortune whose CRC-32 is 0 mod this is held out
    calib_sequences: int = 128      # training windows of `context` bytes for the calibration file
    eval_windows: int = 256         # held-out windows of context + 1 bytes


QUICK = Config(layers=1, steps=40, calib_sequences=16, eval_windows=32)
GROUP = 128


# ------------------------------------------------------------------ corpus

def read_fortunes(directory: str) -> List[bytes]:
    """Every fortune of every database in the folder, in file-name order.

    A database is a text file with its strfile index `<name>.dat` beside it;
    the `.u8` names are symlinks to the same text.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is missing: apt-get install fortunes")
    fortunes = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith((".dat", ".u8")) or os.path.islink(path) or not os.path.exists(path + ".dat"):
            continue
        with open(path, "rb") as f:
            fortunes += [t.strip(b"\n") + b"\n" for t in f.read().split(b"\n%\n") if t.strip()]
    return fortunes


def split_corpus(fortunes: List[bytes], every: int):
    """(train bytes, held-out bytes). The split goes by each fortune's CRC-32,
    so a fortune that appears in two databases lands on one side only."""
    train = [t for t in fortunes if zlib.crc32(t) % every != 0]
    held = [t for t in fortunes if zlib.crc32(t) % every == 0]
    join = lambda ts: np.frombuffer(b"%\n".join(ts), dtype=np.uint8)  # noqa: E731 (fortune's own separator)
    return join(train), join(held)


# ------------------------------------------------------------------ model

class Attention(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.heads = c.heads
        self.q_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.o_proj = nn.Linear(c.d_model, c.d_model, bias=False)
        self.register_buffer("future", torch.triu(torch.ones(c.context, c.context, dtype=torch.bool), 1),
                             persistent=False)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        attn = scores.masked_fill(self.future[:t, :t], float("-inf")).softmax(-1)
        return self.o_proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.up_proj = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.down_proj = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x):
        return self.down_proj(F.gelu(self.up_proj(x)))


class Layer(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(c.d_model)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = nn.LayerNorm(c.d_model)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class ByteLM(nn.Module):
    """Pre-norm GPT over bytes; tensor names follow Hugging Face decoders
    (`layers.N.self_attn.q_proj.weight`, `embed_tokens`, `lm_head`)."""

    def __init__(self, c: Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(256, c.d_model)
        self.embed_positions = nn.Embedding(c.context, c.d_model)
        self.layers = nn.ModuleList(Layer(c) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.d_model)
        self.lm_head = nn.Linear(c.d_model, 256, bias=False)

    def forward(self, tokens):
        x = self.embed_tokens(tokens) + self.embed_positions.weight[:tokens.shape[1]]
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


# ------------------------------------------------------------------ training, evaluation

def batch_at(data: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts]).astype(np.int64))


def train(c: Config, train_data: np.ndarray) -> ByteLM:
    torch.manual_seed(c.seed)
    model = ByteLM(c)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=c.lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(c.seed)
    model.train()
    t0 = time.time()
    for step in range(c.steps):
        # linear warm-up, then cosine down to a tenth
        frac = (step + 1) / c.warmup if step < c.warmup else \
            0.1 + 0.45 * (1 + math.cos(math.pi * (step - c.warmup) / max(1, c.steps - c.warmup)))
        for group in opt.param_groups:
            group["lr"] = c.lr * frac
        x = batch_at(train_data, rng.integers(0, len(train_data) - c.context - 1, c.batch), c.context + 1)
        loss = F.cross_entropy(model(x[:, :-1]).reshape(-1, 256), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0 or step == c.steps - 1:
            print(f"  step {step:5d}  loss {loss.item():.4f}  {time.time() - t0:.0f}s", flush=True)
    model.eval()
    return model


def eval_batches(c: Config, held: np.ndarray) -> torch.Tensor:
    """The first eval_windows non-overlapping windows of the held-out text."""
    n = min(c.eval_windows, (len(held) - 1) // c.context)
    return batch_at(held, np.arange(n) * c.context, c.context + 1)


def calibration_batches(c: Config, train_data: np.ndarray) -> List[torch.Tensor]:
    """calib_sequences training windows of `context` bytes (seeded starts), in batches of 32."""
    rng = np.random.default_rng(c.seed + 1)
    windows = batch_at(train_data, rng.integers(0, len(train_data) - c.context, c.calib_sequences), c.context)
    return [windows[i:i + 32] for i in range(0, len(windows), 32)]


@torch.no_grad()
def perplexity(model: ByteLM, batches: torch.Tensor, chunk: int = 32) -> float:
    """exp(mean negative log-likelihood per predicted byte)."""
    model.eval()
    total = 0.0
    for i in range(0, len(batches), chunk):
        x = batches[i:i + chunk]
        logits = model(x[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, 256), x[:, 1:].reshape(-1), reduction="sum"))
    return math.exp(total / (batches.shape[0] * (batches.shape[1] - 1)))


def state_numpy(model) -> Dict[str, np.ndarray]:
    return {k: v.detach().numpy().astype(np.float32).copy() for k, v in model.state_dict().items()}


def load_numpy(model, tensors):
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in tensors.items()})
    return model


def trained_weights(c: Config, train_data: np.ndarray, cache_dir: str) -> Dict[str, np.ndarray]:
    """Trains once per (config, corpus, training code, torch version); later runs read the cache."""
    key = hashlib.sha256(json.dumps(dataclasses.asdict(c), sort_keys=True).encode()
                         + hashlib.sha256(train_data.tobytes()).digest()
                         + "".join(inspect.getsource(o) for o in (Attention, MLP, Layer, ByteLM, train,
                                                                  batch_at)).encode()
                         + torch.__version__.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"byte-lm-{key}.safetensors")
    if os.path.exists(path):
        print(f"trained weights from the cache: {path}", flush=True)
        return safetensors_io.load(path)
    print(f"training ({c.steps} steps of {c.batch}x{c.context} bytes, {THREADS} thread) ...", flush=True)
    t0 = time.time()
    weights = state_numpy(train(c, train_data))
    print(f"trained in {time.time() - t0:.0f}s", flush=True)
    os.makedirs(cache_dir, exist_ok=True)
    safetensors_io.write(path + ".part", weights)
    os.replace(path + ".part", path)
    return weights


# ------------------------------------------------------------------ rows

@dataclasses.dataclass(frozen=True)
class Row:
    label: str       # as shown in the table
    method: str      # the server's method
    sparsity: Optional[float] = None
    options: Optional[dict] = None
    prunes: bool = False
    bits: int = 0    # 0: not quantized


NM = {"n": 2, "m": 4}


def rows(quick: bool) -> List[Row]:
    all_rows = [
        Row("magnitude 50%", "magnitude", sparsity=0.5, prunes=True),
        Row("Wanda 50%", "wanda", sparsity=0.5, prunes=True),
        Row("SparseGPT 50%", "sparsegpt", sparsity=0.5, prunes=True),
        Row("magnitude 2:4", "nm", options=NM, prunes=True),
        Row("Wanda 2:4", "wanda", options=NM, prunes=True),
        Row("SparseGPT 2:4", "sparsegpt", options=NM, prunes=True),
    ]
    for bits in (8, 4, 3):
        all_rows += [Row(f"RTN {bits}-bit g{GROUP}", "rtn", options={"bits": bits, "group_size": GROUP}, bits=bits),
                     Row(f"GPTQ {bits}-bit g{GROUP}", "gptq", options={"bits": bits, "group_size": GROUP},
                         bits=bits)]
    all_rows.append(Row(f"SparseGPT 2:4 + 4-bit g{GROUP}", "sparsegpt",
                        options=dict(NM, bits=4, group_size=GROUP), prunes=True, bits=4))
    if quick:
        keep = {"magnitude 2:4", "SparseGPT 2:4", f"RTN 4-bit g{GROUP}", f"GPTQ 4-bit g{GROUP}"}
        return [r for r in all_rows if r.label in keep]
    return all_rows


# Orderings a correct implementation should show: (better, worse).
EXPECTED = [("Wanda 50%", "magnitude 50%"), ("SparseGPT 50%", "magnitude 50%"),
            ("Wanda 2:4", "magnitude 2:4"), ("SparseGPT 2:4", "magnitude 2:4"),
            (f"GPTQ 4-bit g{GROUP}", f"RTN 4-bit g{GROUP}"), (f"GPTQ 3-bit g{GROUP}", f"RTN 3-bit g{GROUP}")]


def shape_problems(row: Row, name: str, dense: np.ndarray, out: np.ndarray) -> List[str]:
    """What the output of one selected weight should look like, checked
    independently of the server: the zeros of the sparsity pattern, at most
    2^bits values in each group of GROUP weights along the input axis."""
    problems = []
    if row.prunes:
        zeros = out == 0
        if row.options and "n" in row.options:
            groups = zeros.reshape(out.shape[0], -1, row.options["m"]).sum(-1)
            if groups.min() < row.options["m"] - row.options["n"]:
                problems.append(f"{name}: a group of {row.options['m']} keeps more than {row.options['n']}")
        elif abs(zeros.mean() - row.sparsity) > 0.01:
            problems.append(f"{name}: sparsity {zeros.mean():.4f}, asked {row.sparsity}")
    if row.bits:
        rows_, cols = out.shape
        per_group = [len(np.unique(out[r, g:g + GROUP])) for r in range(rows_) for g in range(0, cols, GROUP)]
        if max(per_group) > 2 ** row.bits:
            problems.append(f"{name}: {max(per_group)} distinct values in a group, more than 2^{row.bits}")
    if np.array_equal(out, dense):
        problems.append(f"{name}: unchanged")
    return problems


@dataclasses.dataclass
class Measured:
    row: Row
    perplexity: float
    layer_error: float        # mean over the compressed weights of ||W - W'||_H^2 / ||W||_H^2
    reported_error: float     # the report's mean reconstruction_error (0 when the method gives none)
    server_seconds: float     # the report's total_seconds
    seconds: float            # the client call, upload to last byte
    reference: Optional[float] = None  # perplexity with the torch/numpy reference's weights
    reference_error: Optional[float] = None


def run_row(row: Row, client, model_path, calib_path, dense, stats, model, batches):
    """One compression job; returns (measured, notes, problems, selected names)."""
    t0 = time.time()
    # magnitude and nm neither use calibration nor report an error from it
    calibrated = row.method not in ("magnitude", "nm")
    kwargs = dict(method=row.method, options=row.options, calibration=calib_path if calibrated else None)
    if row.sparsity is not None:
        kwargs["sparsity"] = row.sparsity
    result = client.compress(model_path, **kwargs)
    seconds = time.time() - t0
    out = safetensors_io.loads(result.model)
    reported = {t.name: t for t in result.report.tensors}
    notes = [f"{row.label}: {k}: server note \"{t.note}\"" for k, t in reported.items() if t.note]
    selected = sorted(reported)
    # the decoder layers' linear weights, and nothing else (embeddings and head stay dense)
    expected = sorted(k for k, v in dense.items() if k.startswith("layers.") and v.ndim == 2)
    problems = [] if selected == expected else [f"{row.label}: the server compressed {selected}, "
                                                 f"expected {expected}"]
    problems += [f"{row.label}: {k} was not compressed, yet changed" for k in dense
                 if k not in reported and not np.array_equal(out[k], dense[k])]
    problems += [p for k in selected for p in shape_problems(row, k, dense[k], out[k])]
    errors = {k: h_error(dense[k], out[k], stats[k].gram) for k in selected}
    if calibrated:
        for k in selected:
            r = reported[k].reconstruction_error
            if not np.isclose(r, errors[k], rtol=1e-3, atol=1e-7):
                notes.append(f"{row.label}: {k}: server reconstruction_error {r:.6g}, "
                             f"recomputed from the Gram matrix {errors[k]:.6g}")
    ppl = perplexity(load_numpy(model, out), batches)
    measured = Measured(row, ppl, float(np.mean(list(errors.values()))),
                        float(np.mean([reported[k].reconstruction_error for k in selected])),
                        result.report.timings.total_seconds, seconds,
                        *reference_figures(row, dense, stats, selected, model, batches))
    return measured, notes + problems, problems, selected


# ------------------------------------------------------------------ independent references

def _prune_lowest(score: np.ndarray, w: np.ndarray, row: Row) -> np.ndarray:
    """Zeros the lowest scores: half of each row, or 2 of every 4 along it."""
    out = w.copy()
    if row.options and "n" in row.options:
        m, n = row.options["m"], row.options["n"]
        groups = score.reshape(w.shape[0], -1, m)
        drop = np.argsort(groups, axis=-1, kind="stable")[..., :m - n]
        mask = np.zeros(groups.shape, dtype=bool)
        np.put_along_axis(mask, drop, True, axis=-1)
        out[mask.reshape(w.shape)] = 0
    elif row.method == "magnitude":  # per tensor, as torch.nn.utils.prune.l1_unstructured
        out.reshape(-1)[np.argsort(score, axis=None, kind="stable")[:round(row.sparsity * w.size)]] = 0
    else:  # Wanda: per output row
        drop = np.argsort(score, axis=1, kind="stable")[:, :round(row.sparsity * w.shape[1])]
        np.put_along_axis(out, drop, 0, axis=1)
    return out


def _rtn(w: torch.Tensor, bits: int) -> torch.Tensor:
    max_code = 2 ** bits - 1
    out = torch.empty_like(w)
    for g in range(0, w.shape[1], GROUP):
        scale, zero = torch_gptq.grid(w[:, g:g + GROUP], max_code)
        out[:, g:g + GROUP] = torch_gptq.quantize(w[:, g:g + GROUP], scale, zero, max_code)
    return out


def reference_weight(row: Row, w: np.ndarray, gram: np.ndarray) -> Optional[np.ndarray]:
    """The row's method written straightforwardly from its paper, on the
    same float32 Gram matrix the server gets (bench/torch_gptq.py,
    torch_sparsegpt.py); None where the bench has no reference (SparseGPT
    2:4, the joint mode)."""
    h = torch.from_numpy(np.asarray(gram, dtype=np.float32))
    if row.method in ("magnitude", "nm"):
        return _prune_lowest(np.abs(w), w, row)
    if row.method == "wanda":
        return _prune_lowest(np.abs(w) * np.sqrt(np.diag(gram).astype(np.float32))[None, :], w, row)
    if row.method == "rtn":
        return _rtn(torch.from_numpy(w), row.bits).numpy()
    if row.method == "gptq":
        return torch_gptq.gptq(torch.from_numpy(w), h, bits=row.bits, groupsize=GROUP).numpy()
    if row.method == "sparsegpt" and not row.bits and not (row.options and "n" in row.options):
        return torch_sparsegpt.sparsegpt(torch.from_numpy(w), h, row.sparsity).numpy()
    return None


def reference_figures(row: Row, dense, stats, names, model, batches):
    """(perplexity, mean layer error) with the reference's weights, or (None, None)."""
    weights = dict(dense)
    for k in names:
        ref = reference_weight(row, dense[k], np.float32(stats[k].gram))
        if ref is None:
            return None, None
        weights[k] = ref
    error = float(np.mean([h_error(dense[k], weights[k], stats[k].gram) for k in names]))
    return perplexity(load_numpy(model, weights), batches), error


# ------------------------------------------------------------------ report

def feature_spread(stats, names) -> float:
    """The largest input-feature norm ‖X_j‖ over its layer's median, over the compressed layers."""
    spread = 0.0
    for k in names:
        norms = np.sqrt(np.diag(stats[k].gram))
        spread = max(spread, float(norms.max() / np.median(norms)))
    return spread


def verdicts(by_label: Dict[str, Measured]):
    out = []
    for better, worse in EXPECTED:
        if better in by_label and worse in by_label:
            a, b = by_label[better].perplexity, by_label[worse].perplexity
            out.append((better, worse, a, b, a <= b))
    return out


def markdown(c: Config, sizes, dense_ppl, measured: List[Measured], selected, notes, command,
             feature_spread: float) -> str:
    n_train, n_held, n_eval = sizes
    params = sum(int(np.prod(s)) for s in selected.values())
    lines = [
        "# Language model: perplexity after pruning and quantization",
        "",
        f"Produced by `{command}`. Every row below went through the real `bonsai-server` (started by the "
        "script on a free 127.0.0.1 port) and the Python client; its dense safetensors output was loaded back "
        "into torch and evaluated. A rerun gives the same section: training, calibration and evaluation run "
        "on one torch thread with fixed seeds, and every method is deterministic.",
        "",
        "## Set-up",
        "",
        f"- **Corpus**: every database of Debian's `fortunes` package (`{CORPUS_DIR}`, files with a `.dat` "
        f"index, in name order), split into fortunes at `%` lines. A fortune whose CRC-32 is 0 mod "
        f"{c.heldout_every} is held out: {n_train:,} training bytes, {n_held:,} held-out bytes.",
        f"- **Model**: byte-level pre-norm transformer decoder, {c.layers} layer{'s' * (c.layers != 1)}, "
        f"d={c.d_model}, "
        f"{c.heads} heads, MLP {c.d_model}→{c.d_ff}→{c.d_model} (GELU), learned positions, context "
        f"{c.context}, no biases in the linear layers, untied LM head. Tensor names follow Hugging Face "
        "decoders (`layers.N.self_attn.q_proj.weight`, `layers.N.mlp.up_proj.weight`, `embed_tokens.weight`, "
        "`lm_head.weight`).",
        f"- **Training**: `torch.manual_seed({c.seed})`, AdamW (β = 0.9, 0.95; weight decay {c.weight_decay} "
        f"on matrices), lr {c.lr} with {c.warmup} warm-up steps then cosine to a tenth, {c.steps} steps of "
        f"{c.batch} random windows of {c.context + 1} bytes, gradient clipping at 1. Short on purpose: "
        "8 min here on one thread of this 2-core machine, several times that while other builds load it (the "
        "weights are then cached "
        "in `build/lm-quality/`, so only the first run trains). The model is under-trained "
        f"({math.log2(dense_ppl):.2f} bits per held-out byte); it is there to tell the methods apart, not to "
        "be a good model.",
        f"- **Calibration**: one file for every row, `bonsai.calibration.collect_gram` over {c.calib_sequences} "
        f"training windows of {c.context} bytes (starts drawn by `numpy.random.default_rng({c.seed + 1})`), "
        "written with `write_calibration` (q/k/v share one Gram matrix through `gram_of`). "
        "The magnitude rows (`magnitude`, `nm`) send none.",
        f"- **Compressed**: the {len(selected)} linear weights of the decoder layers ({params:,} weights), the "
        "server's default selection for safetensors. The embeddings (`embed_tokens`, `embed_positions`) and "
        "the LM head stay dense, as in the SparseGPT, Wanda and GPTQ papers: the default selection leaves "
        "`embed*` and `lm_head` alone, and the script checks they come back bit for bit.",
        "- **Methods**: magnitude per tensor (`scope=\"layer\"`) at 50 %, and `nm` for magnitude 2:4; Wanda and "
        f"SparseGPT at 50 % and with `options={{n: 2, m: 4}}`; RTN and GPTQ with `bits` 8/4/3 and "
        f"`group_size` {GROUP} (asymmetric, the default; GPTQ without `act_order`); SparseGPT 2:4 with "
        f"`bits: 4, group_size: {GROUP}` (the joint prune-and-quantize pass). Server defaults otherwise "
        "(`block_size` 128, `dampening` 0.01).",
        f"- **Perplexity**: exp of the mean negative log-likelihood per byte over the first {n_eval} "
        f"non-overlapping {c.context + 1}-byte windows of the held-out text ({n_eval * c.context:,} predicted "
        "bytes; within a window each byte sees the bytes before it).",
        "- **Layer error**: mean over the compressed weights of ‖W−W′‖²_H / ‖W‖²_H with ‖A‖²_H = tr(A H Aᵀ), "
        "H the calibration Gram matrix; for every calibrated row this equals the report's "
        "`reconstruction_error` (‖WX−W′X‖²/‖WX‖²), which the script checks.",
        "- **Reference columns**: the same figures with weights from an independent implementation in the "
        "script, on the same float32 Gram matrices: numpy for magnitude and Wanda (lowest |W|, or "
        "|W|·‖X_j‖ per output row, per tensor / per row / per group of 4), and the torch baselines of "
        "`make bench` written from the papers for RTN, GPTQ (`bench/torch_gptq.py`) and SparseGPT 50 % "
        "(`bench/torch_sparsegpt.py`). They have none for SparseGPT 2:4 or the joint mode (–). A server "
        "bug that made a method worse would show as a gap between the two.",
        "",
        "## Table",
        "",
        "| row | perplexity | vs dense | layer error | reference perplexity | reference layer error |",
        "|---|---|---|---|---|---|",
        f"| dense | {dense_ppl:.3f} | – | 0 | | |",
    ]
    for m in measured:
        ref = "– | –" if m.reference is None else f"{m.reference:.3f} | {m.reference_error:.5f}"
        lines.append(f"| {m.row.label} | {m.perplexity:.3f} | {100 * (m.perplexity / dense_ppl - 1):+.1f} % "
                     f"| {m.layer_error:.5f} | {ref} |")
    lines += ["", "## Orderings", "",
              "Expected: SparseGPT and Wanda no worse than magnitude at the same sparsity; GPTQ no worse than "
              "RTN at 4 and 3 bits.", ""]
    by_label = {m.row.label: m for m in measured}
    for better, worse, a, b, held in verdicts(by_label):
        line = f"- {better} ≤ {worse}: {'held' if held else '**did not hold**'} ({a:.4f} vs {b:.4f})"
        ra, rb = by_label[better].reference, by_label[worse].reference
        if not held and ra is not None and rb is not None:
            line += (f"; the references give {ra:.4f} vs {rb:.4f}, so "
                     + ("the server's figures are the method's on this model, not a server fault"
                        if ra > rb else "**the server departs from the reference here**"))
            ea, eb = by_label[better].layer_error, by_label[worse].layer_error
            if ea < eb:
                line += (f". Its layer error is lower ({ea:.5f} vs {eb:.5f}): the layer-wise objective "
                         "and the perplexity disagree at this point")
            if better.startswith("Wanda"):
                line += (". Wanda's paper motivates its score |W|·‖X_j‖ with the few very large input "
                         "features of billion-parameter LLMs; in this model no input feature's norm ‖X_j‖ "
                         f"exceeds {feature_spread:.1f}× its layer's median, so |W| alone ranks the weights "
                         "about as well")
        lines.append(line + ".")
    lines += ["", "## Notes from the run", ""]
    lines += [f"- {n}" for n in notes] if notes else \
        ["- None: every compressed weight had the asked pattern (exact 50 % or 2:4 zeros; at most 2^bits "
         f"values in each group of {GROUP}), nothing outside the selection changed, and the server's "
         "reconstruction errors agreed with the script's (relative tolerance 1e-3)."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ self-check

def self_check() -> None:
    """The script's own checkers and references on a random layer, with no
    server and no training (seconds): each checker flags a wrong output and
    passes a right one, GPTQ's reference beats RTN's on correlated inputs,
    and a section rewrite keeps the rest of the file byte for byte."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    x = rng.standard_normal((1024, 256)) @ rng.standard_normal((256, 256))  # correlated inputs
    gram = (x.T @ x).astype(np.float32)
    for row in rows(quick=False):
        ref = reference_weight(row, w, gram)
        if ref is not None:
            assert not shape_problems(row, "w", w, ref), (row.label, shape_problems(row, "w", w, ref))
            assert not shape_problems(row, "w", w, ref.copy())
    half = Row("x", "magnitude", sparsity=0.5, prunes=True)
    nm = Row("x", "nm", options=NM, prunes=True)
    rtn3 = Row("x", "rtn", options={"bits": 3}, bits=3)
    assert shape_problems(half, "w", w, w)                                    # unchanged
    assert shape_problems(half, "w", w, np.where(np.abs(w) < 0.3, 0, w))      # far from 50 %
    bad_nm = reference_weight(nm, w, gram)
    bad_nm[0, :4] = w[0, :4]
    assert shape_problems(nm, "w", w, bad_nm)                                 # a group keeps 4
    assert shape_problems(rtn3, "w", w, reference_weight(Row("x", "rtn", bits=4), w, gram))  # 16 levels
    errors = {b: [h_error(w, reference_weight(Row("x", m, bits=b), w, gram), gram) for m in ("rtn", "gptq")]
              for b in (4, 3)}
    assert all(gptq < 0.8 * rtn for rtn, gptq in errors.values()), errors
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "r.md")
        write_section(path, "a", "A1")
        write_section(path, "b", "B1")
        before = open(path).read()
        write_section(path, "a", "A2\nmore")
        assert open(path).read() == before.replace("A1", "A2\nmore"), open(path).read()
    print(f"self-check passed (GPTQ/RTN layer error {', '.join(f'{b}-bit {g / r:.2f}' for b, (r, g) in errors.items())})")


# ------------------------------------------------------------------ main

def common_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every script on this trained LM shares (lm_quality.py,
    sequential_calibration.py): the server, the results file, the weights
    cache, --quick."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--server", default=os.environ.get("BONSAI_SERVER", "build/bin/bonsai-server"))
    p.add_argument("--out", help="write this script's section of a Markdown file (docs/results.md)")
    p.add_argument("--cache-dir", default=os.path.join("build", "lm-quality"),
                   help="where the trained weights are kept between runs")
    p.add_argument("--quick", action="store_true", help="a 1-layer model, 40 steps, 4 rows: plumbing only")
    return p


def main() -> int:
    p = common_arguments(__doc__)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--self-check", action="store_true",
                   help="check the script's own checkers and references in seconds (no server, no training)")
    args = p.parse_args()
    torch.set_num_threads(THREADS)
    torch.use_deterministic_algorithms(True)
    self_check()  # a second or two; a table from broken checkers would be worthless
    if args.self_check:
        return 0
    c = QUICK if args.quick else Config()
    started = time.time()

    train_data, held = split_corpus(read_fortunes(CORPUS_DIR), c.heldout_every)
    t0 = time.time()
    dense = trained_weights(c, train_data, args.cache_dir)
    train_seconds = time.time() - t0
    model = load_numpy(ByteLM(c), dense)
    batches = eval_batches(c, held)
    dense_ppl = perplexity(model, batches)
    print(f"dense held-out perplexity {dense_ppl:.3f}", flush=True)

    stats = calibration.collect_gram(model, calibration_batches(c, train_data))

    server = Server(os.path.abspath(args.server), args.workers)
    print(f"bonsai-server ready on {server.target}", flush=True)
    measured, notes, problems = [], [], []
    selected = {}
    try:
        with bonsai.Client(server.target, timeout=1800) as client, tempfile.TemporaryDirectory() as work:
            model_path = os.path.join(work, "byte-lm.safetensors")
            calib_path = os.path.join(work, "byte-lm.calib.safetensors")
            safetensors_io.write(model_path, dense)
            calibration.write_calibration(calib_path, stats)
            for row in rows(args.quick):
                m, row_notes, row_problems, names = run_row(row, client, model_path, calib_path, dense, stats,
                                                            model, batches)
                selected = {k: dense[k].shape for k in names}
                measured.append(m)
                notes += row_notes
                problems += row_problems
                ref = "" if m.reference is None else \
                    f"  reference ppl {m.reference:8.3f} error {m.reference_error:.5f}"
                print(f"  {row.label:<28} ppl {m.perplexity:8.3f}  layer error {m.layer_error:.5f}  "
                      f"server {m.server_seconds:6.2f}s  call {m.seconds:6.2f}s{ref}", flush=True)
    finally:
        rc = server.stop()
        print(f"bonsai-server stopped (exit {rc})", flush=True)

    by_label = {m.row.label: m for m in measured}
    for better, worse, a, b, held_ in verdicts(by_label):
        print(f"  {better} <= {worse}: {'held' if held_ else 'DID NOT HOLD'} ({a:.3f} vs {b:.3f})")
    if args.out:
        command = ("PYTHONPATH=client/python /usr/bin/python3 bench/lm_quality.py "
                   f"--server {args.server} --out {args.out}")
        write_section(args.out, SECTION, markdown(c, (len(train_data), len(held), len(batches)), dense_ppl,
                                                  measured, selected, notes, command,
                                                  feature_spread(stats, selected)))
        print(f"wrote the {SECTION} section of {args.out}")
    for n in notes:
        print(f"  note: {n}")
    summary = {"quick": args.quick, "dense_perplexity": dense_ppl, "train_seconds": train_seconds,
               "seconds": time.time() - started, "problems": problems,
               "rows": [dict(label=m.row.label, perplexity=m.perplexity, layer_error=m.layer_error,
                             reported_error=m.reported_error, server_seconds=m.server_seconds,
                             call_seconds=m.seconds, reference_perplexity=m.reference,
                             reference_layer_error=m.reference_error) for m in measured],
               "orderings": [dict(better=b, worse=w, held=h) for b, w, _, _, h in verdicts(by_label)]}
    print(json.dumps(summary))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
