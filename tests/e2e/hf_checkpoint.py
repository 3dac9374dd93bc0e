"""A small Hugging Face-style checkpoint folder, written from numpy, and the
torch references its pruned output is compared with.

The folder holds three safetensors shards of F32 and BF16 tensors, the
model.safetensors.index.json that maps every tensor to its shard (with
metadata.total_size, the sum of the tensors' bytes), a config.json and a
tokenizer.json. Every magnitude of the tensors bonsai selects is distinct
across all shards, so that torch and bonsai cannot break a tie differently.

numpy has no bfloat16: BF16 tensors are drawn as bfloat16 bit patterns and
kept here as the float32 values they stand for (bf16 -> f32 is exact), which
is what the server computes with; pruning only zeroes values, so a kept BF16
value comes back as the same bits.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from bonsai import packing

INDEX = "model.safetensors.index.json"
SHARDS = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]

# name -> (shard number, dtype, shape, scale); a scale of None draws
# log-uniform bfloat16 magnitudes. Embeddings, lm_head and 1-D norms are
# not selected by default.
LAYOUT: Dict[str, Tuple[int, str, Tuple[int, ...], object]] = {
    "model.embed_tokens.weight": (0, "BF16", (64, 16), None),
    "model.layers.0.self_attn.q_proj.weight": (0, "F32", (16, 16), 0.4),
    "model.layers.0.self_attn.k_proj.weight": (0, "BF16", (16, 16), None),
    "model.layers.0.input_layernorm.weight": (0, "F32", (16,), 1.0),
    "model.layers.0.mlp.up_proj.weight": (1, "BF16", (32, 16), None),
    "model.layers.0.mlp.down_proj.weight": (1, "F32", (16, 32), 0.05),
    "model.layers.1.self_attn.q_proj.weight": (1, "F32", (16, 16), 1.5),
    "model.layers.1.mlp.up_proj.weight": (2, "BF16", (24, 16), None),
    "model.layers.1.mlp.down_proj.weight": (2, "F32", (16, 24), 0.2),
    "model.norm.weight": (2, "BF16", (16,), None),
    "lm_head.weight": (2, "F32", (64, 16), 0.3),
}
SELECTED = [n for n, (_, _, shape, _) in LAYOUT.items()
            if len(shape) >= 2 and not any(m in n for m in ("embed", "lm_head"))]
CONFIG = {"architectures": ["TinyForCausalLM"], "hidden_size": 16, "num_hidden_layers": 2,
          "torch_dtype": "bfloat16", "vocab_size": 64}
TOKENIZER = {"version": "1.0", "model": {"type": "BPE", "vocab": {f"t{i}": i for i in range(64)},
                                          "merges": []}, "added_tokens": []}


class Tensor:
    def __init__(self, name: str, shard: str, dtype: str, values: np.ndarray):
        self.name, self.shard, self.dtype, self.values = name, shard, dtype, values

    def raw(self) -> bytes:
        if self.dtype == "BF16":
            return (self.values.view(np.uint32) >> 16).astype("<u2").tobytes()
        return self.values.astype("<f4").tobytes()


def _bf16_values(rng, count: int, taken: set) -> np.ndarray:
    """Distinct bfloat16 magnitudes in [2^-12, 2^4), random signs, none in `taken`."""
    exponents = np.arange(127 - 12, 127 + 4, dtype=np.uint32)
    pool = ((exponents[:, None] << 7) | np.arange(128, dtype=np.uint32)[None, :]).ravel()
    pool = pool[~np.isin((pool << 16).view(np.float32), np.array(sorted(taken), np.float32))]
    bits = rng.choice(pool, size=count, replace=False) << 16
    signs = rng.choice(np.array([0, 1 << 31], np.uint32), size=count)
    return (bits | signs).view(np.float32)


def make_tensors(seed: int = 0) -> Dict[str, Tensor]:
    """The checkpoint's tensors (float32 values, BF16 ones exactly bfloat16)."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        tensors, taken = {}, set()
        for name, (shard, dtype, shape, scale) in LAYOUT.items():
            count = int(np.prod(shape))
            if dtype == "BF16":
                values = _bf16_values(rng, count, taken)
            else:
                values = (rng.standard_normal(count) * scale).astype(np.float32)
            if name in SELECTED:
                taken.update(np.abs(values).tolist())
            tensors[name] = Tensor(name, SHARDS[shard], dtype, values.reshape(shape))
        mags = np.concatenate([np.abs(tensors[n].values).ravel() for n in SELECTED])
        if len(np.unique(mags)) == mags.size and np.all(mags > 0):
            return tensors
    raise RuntimeError("could not draw tie-free magnitudes")


def safetensors_bytes(tensors: List[Tensor], metadata: Mapping[str, str] = None) -> bytes:
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = dict(metadata)
    for t in tensors:
        size = t.values.size * (2 if t.dtype == "BF16" else 4)
        header[t.name] = {"dtype": t.dtype, "shape": list(t.values.shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(t.raw() for t in tensors)


def index_json(tensors: Mapping[str, Tensor]) -> dict:
    total = sum(len(t.raw()) for t in tensors.values())
    return {"metadata": {"total_size": total},
            "weight_map": {name: t.shard for name, t in sorted(tensors.items())}}


def write_checkpoint(folder, tensors: Mapping[str, Tensor], index: dict = None) -> None:
    """Writes the shards, the index (as given, or the true one), config.json and tokenizer.json."""
    os.makedirs(folder, exist_ok=True)
    for shard in SHARDS:
        members = [t for t in tensors.values() if t.shard == shard]
        with open(os.path.join(folder, shard), "wb") as f:
            f.write(safetensors_bytes(members, {"format": "pt"}))
    with open(os.path.join(folder, INDEX), "w") as f:
        json.dump(index if index is not None else index_json(tensors), f, indent=2)
        f.write("\n")
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump(TOKENIZER, f)


def relative_files(folder) -> List[str]:
    """Every file under `folder`, '/'-separated, sorted (hidden ones too)."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def file_bytes(source, name: str) -> bytes:
    """A file of an output: `source` is a folder or a dict of name -> bytes."""
    if isinstance(source, Mapping):
        return source[name]
    with open(os.path.join(source, *name.split("/")), "rb") as f:
        return f.read()


def read_output(source) -> Tuple[Dict[str, np.ndarray], Dict[str, str], dict]:
    """The output's tensors (dense float32, packed ones unpacked), which shard
    holds each stored entry, and each shard's raw header. `source` is the
    output folder or a dict of name -> bytes."""
    values, stored_in, headers = {}, {}, {}
    for shard in SHARDS:
        data = file_bytes(source, shard)
        (length,) = struct.unpack_from("<Q", data)
        header = json.loads(data[8:8 + length])
        headers[shard] = header
        for name in header:
            if name != "__metadata__":
                stored_in[name] = shard
        values.update(packing.unpack(data))
    return values, stored_in, headers


def stored_bytes(headers: Mapping[str, dict]) -> int:
    return sum(e["data_offsets"][1] - e["data_offsets"][0]
               for h in headers.values() for n, e in h.items() if n != "__metadata__")


# ---------------------------------------------------------------- torch references

def _holders(arrays: Mapping[str, np.ndarray]) -> Dict[str, nn.Module]:
    holders = {}
    for name, values in arrays.items():
        m = nn.Module()
        m.weight = nn.Parameter(torch.from_numpy(np.array(values, np.float32)))
        holders[name] = m
    return holders


def _kept(holders: Mapping[str, nn.Module]) -> Dict[str, np.ndarray]:
    return {name: m.weight_mask.detach().numpy().astype(bool) for name, m in holders.items()}


def torch_global_keep(arrays: Mapping[str, np.ndarray], amount: float) -> Dict[str, np.ndarray]:
    """torch.nn.utils.prune.global_unstructured (L1Unstructured) over all of `arrays` together."""
    holders = _holders(arrays)
    prune.global_unstructured([(m, "weight") for m in holders.values()], pruning_method=prune.L1Unstructured,
                              amount=amount)
    return _kept(holders)


def torch_layer_keep(arrays: Mapping[str, np.ndarray], amount: float) -> Dict[str, np.ndarray]:
    """torch.nn.utils.prune.l1_unstructured on each of `arrays` alone."""
    holders = _holders(arrays)
    for m in holders.values():
        prune.l1_unstructured(m, "weight", amount=amount)
    return _kept(holders)
