"""A six-shard checkpoint made to test one global threshold over replicas.

Magnitudes come from a small set of values shared by F32 and BF16 tensors
(each value is exact in bfloat16), so a global threshold always falls on a
value that many weights in several shards hold: which of those ties are
pruned depends on the global order (shards in name order, tensors in data
order), and a client that hands the ties out wrongly changes the output.
The folder also holds the index, a config and a tokenizer file, and a
calibration file of Gram matrices, where one weight shares the Gram matrix
of a weight in another shard (`.gram_of`).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import numpy as np

from bonsai import safetensors_io

SHARDS = [f"model-0000{i}-of-00006.safetensors" for i in range(1, 7)]
INDEX = "model.safetensors.index.json"

# Magnitudes exact in bfloat16 (7-bit mantissa), a few hundred distinct ones.
_LEVELS = np.unique(((np.arange(200, dtype=np.uint32) * 3 + (118 << 7)) << 16).view(np.float32))


def _layout(rows: int) -> List[Tuple[int, str, str, Tuple[int, ...]]]:
    """(shard, name, dtype, shape) in data order."""
    layout = [(0, "model.embed_tokens.weight", "BF16", (64, 32))]
    for layer in range(6):
        shard = layer
        prefix = f"model.layers.{layer}"
        layout += [
            (shard, f"{prefix}.input_layernorm.weight", "F32", (32,)),
            (shard, f"{prefix}.self_attn.q_proj.weight", "F32" if layer % 2 else "BF16", (32, 32)),
            (shard, f"{prefix}.mlp.up_proj.weight", "BF16" if layer % 2 else "F32", (rows, 32)),
            (shard, f"{prefix}.mlp.down_proj.weight", "F32", (32, rows)),
        ]
    # k_proj of layer 1 lives in shard 3 but reads layer 1's input (q_proj in shard 2).
    layout.append((2, "model.layers.1.self_attn.k_proj.weight", "F32", (32, 32)))
    layout.append((5, "lm_head.weight", "F32", (64, 32)))
    return layout


def make_tensors(seed: int = 7, rows: int = 256) -> Dict[str, Tuple[int, str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for shard, name, dtype, shape in _layout(rows):
        values = rng.choice(_LEVELS, size=shape) * rng.choice(np.array([-1, 1], np.float32), size=shape)
        out[name] = (shard, dtype, values.astype(np.float32))
    return out


def _raw(dtype: str, values: np.ndarray) -> bytes:
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype("<f4").tobytes()


def _write_shard(path: str, entries: List[Tuple[str, str, np.ndarray]]) -> int:
    header, offset, blobs = {}, 0, []
    for name, dtype, values in entries:
        raw = _raw(dtype, values)
        header[name] = {"dtype": dtype, "shape": list(values.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for blob in blobs:
            f.write(blob)
    return offset


def write_checkpoint(folder: str, seed: int = 7, rows: int = 256) -> Dict[str, Tuple[int, str, np.ndarray]]:
    os.makedirs(folder, exist_ok=True)
    tensors = make_tensors(seed, rows)
    weight_map, total = {}, 0
    for i, shard in enumerate(SHARDS):
        entries = [(n, d, v) for n, (s, d, v) in tensors.items() if s == i]
        total += _write_shard(os.path.join(folder, shard), entries)
        for name, _, _ in entries:
            weight_map[name] = shard
    with open(os.path.join(folder, INDEX), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["TinyForCausalLM"], "hidden_size": 32, "num_hidden_layers": 6}, f)
    os.makedirs(os.path.join(folder, "tokenizer"), exist_ok=True)
    with open(os.path.join(folder, "tokenizer", "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "vocab": {f"t{i}": i for i in range(64)}}, f)
    return tensors


def write_calibration(path: str, tensors, seed: int = 11) -> None:
    """Gram matrices for every selected 2-D weight (k_proj of layer 1 shares q_proj's)."""
    rng = np.random.default_rng(seed)
    arrays, metadata = {}, {}
    for name, (_, _, values) in tensors.items():
        if values.ndim != 2 or "embed" in name or "lm_head" in name:
            continue
        if name == "model.layers.1.self_attn.k_proj.weight":
            metadata[f"{name}.gram_of"] = "model.layers.1.self_attn.q_proj.weight"
            continue
        d = values.shape[1]
        x = rng.standard_normal((4 * d, d)).astype(np.float32)
        arrays[f"{name}.gram"] = (x.T @ x).astype(np.float32)
        arrays[f"{name}.samples"] = np.array([4 * d], np.int64)
    # A stray entry the model lacks: both paths must warn about it alike.
    arrays["model.layers.9.mlp.up_proj.weight.gram"] = np.eye(4, dtype=np.float32)
    safetensors_io.write(path, arrays, metadata)


def global_order_magnitudes(tensors, selected: List[str]) -> List[Tuple[str, np.ndarray]]:
    """The selected tensors' |w| in one job's order: shards by name, data order within."""
    return [(n, np.abs(tensors[n][2]).ravel()) for n in sorted(selected, key=lambda n: tensors[n][0])]


def expected_global_mask(tensors, selected: List[str], sparsity: float) -> Dict[str, np.ndarray]:
    """numpy's own answer: the k smallest |w|, ties in global order (a stable sort)."""
    ordered = global_order_magnitudes(tensors, selected)
    flat = np.concatenate([m for _, m in ordered])
    k = int(np.rint(sparsity * flat.size))
    pruned = np.zeros(flat.size, bool)
    pruned[np.argsort(flat, kind="stable")[:k]] = True
    masks, start = {}, 0
    for name, m in ordered:
        masks[name] = pruned[start:start + m.size].reshape(tensors[name][2].shape)
        start += m.size
    return masks
