"""The benchmark model: `tensors` float32 weights of rows x cols, normal
with a fixed seed, written once as safetensors and reused while its file
exists. Names are `layers.{i}.weight`, which bonsai selects by default.
"""
from __future__ import annotations

import os
from typing import Dict

import numpy as np

from bonsai import safetensors_io


def model_path(directory: str, tensors: int, rows: int, cols: int, seed: int = 0) -> str:
    """Writes the model into `directory` unless it is there already."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"model-{tensors}x{rows}x{cols}-seed{seed}.safetensors")
    if not os.path.exists(path):
        rng = np.random.default_rng(seed)
        weights = {f"layers.{i}.weight": rng.standard_normal((rows, cols), dtype=np.float32) * 0.02
                   for i in range(tensors)}
        partial = path + ".partial"
        safetensors_io.write(partial, weights)
        os.replace(partial, path)
    return path


def load(path: str) -> Dict[str, np.ndarray]:
    """The tensors as read-only arrays mapped from the file (no copy)."""
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        f.seek(0)
        header = safetensors_io.read_header(f.read(8 + header_length))
    base = 8 + header_length
    arrays = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        assert entry["dtype"] == "F32", entry
        arrays[name] = np.memmap(path, dtype="<f4", mode="r", offset=base + begin,
                                 shape=tuple(entry["shape"]))
    return arrays


def expected_zeros(path: str, sparsity: float) -> int:
    """The zeros a global magnitude pruning of every tensor must leave."""
    n = sum(a.size for a in load(path).values())
    return int(np.rint(sparsity * n))  # as tensor::PruneCount: round half to even on .5


def count_zeros(path: str) -> int:
    return int(sum(int(np.count_nonzero(a == 0)) for a in load(path).values()))
