"""Cuts a calibration file down to the weights of one shard job.

A job that receives statistics for weights it does not hold warns that they
name no tensor of its model, and it would hold the whole file in memory for
a few of its matrices. So each shard job gets a safetensors file with only
its weights' entries (`W`, `W.gram`, `W.samples`, and the `W.samples` and
`W.gram_of` metadata; see server/engine/calibration.h), their bytes copied
unchanged, so the server computes exactly what it would from the whole file.

When W shares the Gram matrix of a weight S in another shard (`W.gram_of`
is S), S's entries travel under the name of the job's first weight that
shares them, and the job's other sharers point at that one.
"""
from __future__ import annotations

import json
import struct
from typing import Dict, Iterable, List, Optional, Set, Tuple

_SUFFIXES = (".gram", ".samples")


def read_header(path: str) -> Tuple[dict, int]:
    """The JSON header of a safetensors file and where its data begins."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > (100 << 20):
            raise ValueError(f"{path} is not a safetensors file (header of {length} bytes)")
        return json.loads(f.read(length)), 8 + length


def weight_of(entry: str) -> str:
    for suffix in _SUFFIXES:
        if entry.endswith(suffix):
            return entry[: -len(suffix)]
    return entry


def weights_named(header: dict) -> List[str]:
    """Every weight the calibration file has statistics for (aliases too), sorted."""
    names: Set[str] = {weight_of(k) for k in header if k != "__metadata__"}
    for key in (header.get("__metadata__") or {}):
        for suffix in (".samples", ".gram_of"):
            if key.endswith(suffix):
                names.add(key[: -len(suffix)])
    return sorted(names)


def write_subset(path: str, header: dict, data_start: int, weights: Iterable[str], destination: str) -> bool:
    """Writes the entries of `weights` to `destination`; False when there are none."""
    wanted = set(weights)
    metadata: Dict[str, str] = dict(header.get("__metadata__") or {})
    source_of = {k[: -len(".gram_of")]: v for k, v in metadata.items() if k.endswith(".gram_of")}
    # Which stored weight each wanted weight reads, and under which name it travels.
    rename: Dict[str, str] = {}  # stored weight -> name in the subset
    out_meta: Dict[str, str] = {}
    for weight in sorted(wanted):
        source = source_of.get(weight)
        if source is None:
            continue
        if source in wanted:
            out_meta[f"{weight}.gram_of"] = source
            continue
        carrier = rename.setdefault(source, weight)
        if carrier != weight:
            out_meta[f"{weight}.gram_of"] = carrier
    for weight in wanted:
        if weight not in source_of:
            rename.setdefault(weight, weight)
    entries: List[Tuple[str, dict]] = []
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        stored = weight_of(key)
        if stored not in rename:
            continue
        entries.append((rename[stored] + key[len(stored):], entry))
    for key, value in metadata.items():
        if key.endswith(".samples") and key[: -len(".samples")] in rename:
            out_meta[rename[key[: -len(".samples")]] + ".samples"] = value
    if not entries and not out_meta:
        return False
    new_header: dict = {}
    if out_meta:
        new_header["__metadata__"] = out_meta
    offset = 0
    for name, entry in entries:
        begin, end = entry["data_offsets"]
        new_header[name] = {"dtype": entry["dtype"], "shape": entry["shape"],
                            "data_offsets": [offset, offset + end - begin]}
        offset += end - begin
    raw = json.dumps(new_header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "rb") as src, open(destination, "wb") as out:
        out.write(struct.pack("<Q", len(raw)) + raw)
        for _, entry in entries:
            begin, end = entry["data_offsets"]
            src.seek(data_start + begin)
            remaining = end - begin
            while remaining:
                chunk = src.read(min(remaining, 8 << 20))
                if not chunk:
                    raise ValueError(f"{path} ends inside its tensor data")
                out.write(chunk)
                remaining -= len(chunk)
    return True


def unused_warning(calibration_weights: List[str], model_tensors: Set[str]) -> Optional[str]:
    """The server's warning for entries that name no tensor of the model."""
    unused = [name for name in calibration_weights if name not in model_tensors]
    if not unused:
        return None
    examples = ", ".join(f"'{name}'" for name in unused[:3])
    return (f"{len(unused)} calibration entr{'y names' if len(unused) == 1 else 'ies name'} no tensor of "
            f"the model ({examples}{', ...' if len(unused) > 3 else ''}); key calibration by the model's "
            f"tensor names (see Inspect)")
