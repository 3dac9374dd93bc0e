"""A Hugging Face-style sharded checkpoint for benchmarks and tests: a folder
of BF16 safetensors shards `model-000NN-of-000MM.safetensors`, the index
`model.safetensors.index.json` (`metadata.total_size`, `weight_map`) and a
Llama-like `config.json`.

    sharded_model.py DIRECTORY [--total-bytes 8GiB] [--shards 16] [--seed 0]

    import sharded_model
    info = sharded_model.write(directory, total_bytes=32 << 20, shards=4,
                               hidden=256, intermediate=688, vocab=1024)

The layout is Llama's (embeddings, per layer q/k/v/o, gate/up/down and two
norms, a final norm, lm_head) with as many layers as bring the tensors'
bytes nearest `total_bytes`. Memory stays bounded whatever the size: each
tensor is generated and written in blocks of BLOCK_BYTES. Values are random
bit patterns from a fixed seed, SFC64 words masked with no float arithmetic
(hundreds of MB/s): random sign and mantissa, exponents giving magnitudes in
[2^-7, 2^-3), never zero, NaN or infinite; 1024 distinct magnitudes, so a
threshold falls among many ties, as in real BF16 checkpoints. numpy has no
bfloat16: the data are written as uint16.
"""
from __future__ import annotations

import argparse
import json
import os
import struct
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

BLOCK_BYTES = 32 << 20
BF16_BYTES = 2
# Keep the sign, the two low exponent bits and the 7 mantissa bits of each
# random 16-bit pattern; the exponent's high bits are fixed at 0x78 (2^-7).
# Four values to a little-endian uint64 word.
_KEEP_BITS, _SET_BITS = np.uint64(0x81FF_81FF_81FF_81FF), np.uint64(0x3C00_3C00_3C00_3C00)
_ALL_64 = np.iinfo(np.uint64).max


@dataclass(frozen=True)
class ShardedModel:
    directory: str
    files: List[str]            # shard file names, in order
    weight_map: Dict[str, str]  # tensor name -> shard file name
    shapes: Dict[str, Tuple[int, ...]]
    total_size: int             # bytes of tensor data, as the index states it
    layers: int


def llama_tensors(layers: int, hidden: int, intermediate: int, vocab: int) -> List[Tuple[str, Tuple[int, ...]]]:
    names = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        names += [(f"{prefix}.self_attn.{p}_proj.weight", (hidden, hidden)) for p in "qkvo"]
        names += [(f"{prefix}.mlp.gate_proj.weight", (intermediate, hidden)),
                  (f"{prefix}.mlp.up_proj.weight", (intermediate, hidden)),
                  (f"{prefix}.mlp.down_proj.weight", (hidden, intermediate)),
                  (f"{prefix}.input_layernorm.weight", (hidden,)),
                  (f"{prefix}.post_attention_layernorm.weight", (hidden,))]
    names += [("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]
    return names


def layers_for(total_bytes: int, hidden: int, intermediate: int, vocab: int) -> int:
    fixed = (2 * vocab * hidden + hidden) * BF16_BYTES
    per_layer = (4 * hidden * hidden + 3 * hidden * intermediate + 2 * hidden) * BF16_BYTES
    return max(1, round((total_bytes - fixed) / per_layer))


def assign_shards(tensors: List[Tuple[str, Tuple[int, ...]]], shards: int) -> List[List[int]]:
    """Consecutive tensors per shard, each shard near total/shards bytes.

    A tensor goes to the shard its first byte falls in; a tensor larger than
    a shard would leave one empty, which is refused rather than written.
    """
    sizes = [int(np.prod(shape)) * BF16_BYTES for _, shape in tensors]
    total = sum(sizes)
    groups: List[List[int]] = [[] for _ in range(shards)]
    offset = 0
    for index, size in enumerate(sizes):
        groups[min(shards - 1, offset * shards // total)].append(index)
        offset += size
    empty = [i + 1 for i, g in enumerate(groups) if not g]
    if empty:
        raise ValueError(f"shards {empty} would be empty: {len(tensors)} tensors, the largest "
                         f"{max(sizes)} bytes, cannot fill {shards} shards of ~{total // shards} bytes; "
                         "use fewer shards or more layers")
    return groups


def _header(entries: List[Tuple[str, Tuple[int, ...]]]) -> bytes:
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        size = int(np.prod(shape)) * BF16_BYTES
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _write_values(f, rng: np.random.Generator, count: int) -> None:
    """`count` BF16 values, generated four to a uint64 (SFC64 draws are the cheap part)."""
    words = BLOCK_BYTES // 8
    remaining = count * BF16_BYTES
    while remaining:
        bits = rng.integers(0, _ALL_64, size=min(words, -(-remaining // 8)), dtype=np.uint64, endpoint=True)
        np.bitwise_and(bits, _KEEP_BITS, out=bits)
        np.bitwise_or(bits, _SET_BITS, out=bits)
        data = memoryview(bits).cast("B")[:remaining]
        f.write(data)
        remaining -= len(data)


def write(directory: str, total_bytes: int = 8 << 30, shards: int = 16, seed: int = 0,
          hidden: int = 4096, intermediate: int = 11008, vocab: int = 32000) -> ShardedModel:
    """Writes the checkpoint into `directory` (created; existing files replaced)."""
    layers = layers_for(total_bytes, hidden, intermediate, vocab)
    tensors = llama_tensors(layers, hidden, intermediate, vocab)
    groups = assign_shards(tensors, shards)
    os.makedirs(directory, exist_ok=True)
    files, weight_map = [], {}
    for shard, indices in enumerate(groups):
        name = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        entries = [tensors[i] for i in indices]
        with open(os.path.join(directory, name), "wb") as f:
            f.write(_header(entries))
            for i in indices:
                # One stream per tensor: a tensor's values do not depend on the
                # shard count or the block size.
                _write_values(f, np.random.Generator(np.random.SFC64([seed, i])), int(np.prod(tensors[i][1])))
        files.append(name)
        weight_map.update({tensor_name: name for tensor_name, _ in entries})
    total_size = sum(int(np.prod(shape)) * BF16_BYTES for _, shape in tensors)
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total_size}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16",
                   "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
                   "num_attention_heads": max(1, hidden // 128), "vocab_size": vocab,
                   "rms_norm_eps": 1e-5}, f, indent=2)
    return ShardedModel(directory, files, weight_map, dict(tensors), total_size, layers)


def load(directory: str) -> Dict[str, np.ndarray]:
    """Every tensor of a sharded folder as read-only uint16 arrays mapped from its shard."""
    with open(os.path.join(directory, "model.safetensors.index.json")) as f:
        weight_map = json.load(f)["weight_map"]
    arrays = {}
    for file_name in sorted(set(weight_map.values())):
        path = os.path.join(directory, file_name)
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            begin, end = entry["data_offsets"]
            arrays[name] = np.memmap(path, dtype="<u2", mode="r", offset=8 + length + begin,
                                     shape=tuple(entry["shape"]))
    return arrays


def count_zeros(directory: str) -> int:
    """BF16 zeros (either sign) over every tensor of a sharded folder."""
    return int(sum(int(np.count_nonzero((a & np.uint16(0x7FFF)) == 0)) for a in load(directory).values()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory")
    p.add_argument("--total-bytes", type=int, default=8 << 30)
    p.add_argument("--shards", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    model = write(args.directory, args.total_bytes, args.shards, args.seed)
    print(json.dumps({"directory": model.directory, "total_size": model.total_size, "layers": model.layers,
                      "shards": len(model.files), "tensors": len(model.weight_map)}))


if __name__ == "__main__":
    main()
