"""A model larger than the server's memory: a 1 GiB sharded checkpoint through
a server held to 512 MiB by a memory cgroup. Uploads and outputs go through
the disk spool, so the job holds about two copies of one tensor, never the
model (issue 8's memory bar: VmHWM within 2 x the largest tensor + 200 MiB)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import bonsai
import memory_limit
from bonsai import safetensors_io

MIB = 1 << 20
SHARDS, PER_SHARD, ROWS, COLS = 4, 4, 4096, 4096  # 16 x 64 MiB float32 = 1 GiB
TENSOR_BYTES = ROWS * COLS * 4

pytestmark = pytest.mark.skipif(memory_limit.unavailable_reason() is not None,
                                reason=str(memory_limit.unavailable_reason()))


def _write_checkpoint(folder) -> dict:
    rng = np.random.default_rng(8)
    weight_map = {}
    for s in range(SHARDS):
        name = f"model-{s + 1:05d}-of-{SHARDS:05d}.safetensors"
        tensors = {f"model.layers.{s}.mlp.{k}.weight": rng.standard_normal((ROWS, COLS), dtype=np.float32)
                   for k in range(PER_SHARD)}
        safetensors_io.write(os.path.join(folder, name), tensors)
        weight_map.update({t: name for t in tensors})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": SHARDS * PER_SHARD * TENSOR_BYTES}, "weight_map": weight_map}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write('{"model_type": "test"}\n')
    return weight_map


def _tensor(path: str, name: str) -> np.ndarray:
    """One tensor of a safetensors file, memory-mapped (the test reads 1 GiB twice)."""
    with open(path, "rb") as f:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length))
    begin, end = header[name]["data_offsets"]
    return np.memmap(path, dtype=np.float32, mode="r", offset=8 + length + begin,
                     shape=tuple(header[name]["shape"]))


def test_a_1_gib_checkpoint_compresses_in_a_512_mib_server(tmp_path):
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    weight_map = _write_checkpoint(source)
    spool = tmp_path / "spool"
    spool.mkdir()
    with memory_limit.limited_server(512 * MIB, [f"--spool_dir={spool}"]) as server:
        with bonsai.Client(server.target, timeout=900) as client:
            # A small server keeps its whole budget for working sets: no memory spool.
            assert client.capabilities().limits.memory_spool_bytes == 0
            result = client.compress(str(source), method="magnitude", sparsity=0.5, scope="global",
                                     output_path=str(out))
        hwm = server.vm_hwm_bytes()
        assert server.memory_group.oom_kills() == 0
        server.check_alive()
        assert os.listdir(spool) == []
    assert hwm <= 2 * TENSOR_BYTES + 200 * MIB, f"VmHWM {hwm / MIB:.0f} MiB"

    # One global threshold over every shard: exactly round(0.5 n) zeros, and
    # no pruned weight larger than a kept one (random normals: no ties).
    n = len(weight_map) * ROWS * COLS
    zeros, pruned_max, kept_min = 0, 0.0, np.inf
    for name, shard in weight_map.items():
        before = np.abs(_tensor(str(source / shard), name))
        after = _tensor(str(out / shard), name)
        gone = after == 0
        zeros += int(gone.sum())
        pruned_max = max(pruned_max, float(before[gone].max(initial=0)))
        kept_min = min(kept_min, float(before[~gone].min(initial=np.inf)))
        np.testing.assert_array_equal(after[~gone], _tensor(str(source / shard), name)[~gone])
    assert zeros == round(0.5 * n)
    assert pruned_max <= kept_min
    assert (out / "config.json").read_bytes() == (source / "config.json").read_bytes()
    assert (out / "model.safetensors.index.json").read_bytes() == \
        (source / "model.safetensors.index.json").read_bytes()
    assert result.report.totals.sparsity == pytest.approx(0.5)
    assert {f.name for f in result.report.files} == set(os.listdir(source))
