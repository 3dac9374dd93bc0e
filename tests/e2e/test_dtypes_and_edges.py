"""Half-precision weights, empty tensors and do-nothing requests."""
from __future__ import annotations

import json
import struct
import subprocess

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from expect import smallest_k_mask


def _bf16_safetensors(name: str, values: np.ndarray) -> bytes:
    """BF16 is float32's upper half; numpy has no bfloat16, so write it by hand."""
    bits = (values.astype(np.float32).view(np.uint32) >> 16).astype("<u2")
    header = json.dumps({name: {"dtype": "BF16", "shape": list(values.shape),
                                "data_offsets": [0, bits.nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + bits.tobytes()


def _read_bf16(data: bytes, name: str) -> np.ndarray:
    header = safetensors_io.read_header(data)
    begin, end = header[name]["data_offsets"]
    base = 8 + struct.unpack_from("<Q", data)[0]
    bits = np.frombuffer(data, "<u2", count=(end - begin) // 2, offset=base + begin)
    assert header[name]["dtype"] == "BF16"
    return (bits.astype(np.uint32) << 16).view(np.float32).reshape(header[name]["shape"])


def _distinct(shape, seed):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    # Magnitudes exactly representable in 8 mantissa bits and all distinct.
    mags = (rng.permutation(n) + 1).astype(np.float32) / 64
    return (mags * rng.choice([-1, 1], n)).reshape(shape).astype(np.float32)


def test_float16_weights_are_pruned_and_stay_float16(client):
    w = _distinct((24, 40), 1)
    assert len(np.unique(np.abs(w.astype(np.float16)))) == w.size
    result = client.compress(safetensors_io.dumps({"w.weight": w.astype(np.float16)}), sparsity=0.6)
    out = safetensors_io.loads(result.model)["w.weight"]
    assert out.dtype == np.float16
    keep = smallest_k_mask(w, round(0.6 * w.size))
    np.testing.assert_array_equal(out != 0, keep)
    np.testing.assert_array_equal(out[keep], w.astype(np.float16)[keep])
    assert result.tensor("w.weight").dtype == "F16"


def test_bfloat16_weights_are_pruned_and_stay_bfloat16(client):
    w = _distinct((16, 16), 2)  # |w| <= 4 with 8 significant bits: exact in bfloat16
    result = client.compress(_bf16_safetensors("w.weight", w), sparsity=0.5)
    out = _read_bf16(result.model, "w.weight")
    keep = smallest_k_mask(w, round(0.5 * w.size))
    np.testing.assert_array_equal(out != 0, keep)
    np.testing.assert_array_equal(out[keep], w[keep])


def test_zero_sparsity_changes_no_weight(client, mlp_safetensors):
    result = client.compress(mlp_safetensors, sparsity=0.0)
    before, after = safetensors_io.loads(mlp_safetensors), safetensors_io.loads(result.model)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])


def test_empty_and_integer_tensors_pass_through(client):
    tensors = {"empty.weight": np.zeros((0, 8), np.float32), "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
               "w.weight": _distinct((8, 8), 3)}
    result = client.compress(safetensors_io.dumps(tensors), sparsity=0.5)
    out = safetensors_io.loads(result.model)
    assert out["empty.weight"].shape == (0, 8)
    np.testing.assert_array_equal(out["ids"], tensors["ids"])
    assert int((out["w.weight"] == 0).sum()) == 32


def test_model_with_nothing_to_prune_is_invalid_argument_saying_so(strict_client):
    # Issue 10: a job that would return its input unchanged is a selection
    # mistake, refused with the selection it had.
    tensors = {"bias": np.ones(16, np.float32)}
    with pytest.raises(bonsai.BonsaiError) as info:
        strict_client.compress(safetensors_io.dumps(tensors), sparsity=0.5)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no tensor of the model is selected (0 of 1 tensors selected by default)" in info.value.message


def test_report_totals_and_timings_are_filled(client, cnn_onnx):
    result = client.compress(cnn_onnx, sparsity=0.5, scope="global")
    totals, timings = result.report.totals, result.report.timings
    assert totals.model_bytes_in == len(cnn_onnx)
    assert totals.model_bytes_out == len(result.model)
    assert 0 < totals.model_bytes_out_zstd < totals.model_bytes_out
    assert totals.params >= totals.prunable_params > 0
    assert totals.nonzero_after == pytest.approx(totals.prunable_params * 0.5, abs=1)
    assert timings.total_seconds > 0 and timings.compress_seconds >= 0
    assert result.report.method == "magnitude"


def _zstd_size(data: bytes, tmp_path) -> int:
    """The size Debian's zstd command line gives the same bytes at level 1 (from
    a file, so that it records the content size in the frame as the server does)."""
    path = tmp_path / "output.bin"
    path.write_bytes(data)
    out = subprocess.run(["zstd", "-1", "--no-check", "-c", "-q", str(path)],
                         stdout=subprocess.PIPE, check=True).stdout
    return len(out)


def test_zstd_size_is_what_the_zstd_tool_gives(client, tmp_path):
    """model_bytes_out_zstd is checked against the zstd command line: exactly for
    an output of one frame (under 8 MiB), within a fraction of a percent for one
    the server compresses as several frames in parallel."""
    rng = np.random.default_rng(7)
    small = {"a.weight": rng.standard_normal((256, 512), dtype=np.float32)}
    result = client.compress(safetensors_io.dumps(small), sparsity=0.6)
    assert result.report.totals.model_bytes_out_zstd == _zstd_size(result.model, tmp_path)
    assert not result.report.totals.model_bytes_out_zstd_estimated

    large = {f"l{i}.weight": rng.standard_normal((1024, 1024), dtype=np.float32) for i in range(5)}
    result = client.compress(safetensors_io.dumps(large), sparsity=0.6)
    assert len(result.model) > 2 * (8 << 20)
    assert result.report.totals.model_bytes_out_zstd == pytest.approx(_zstd_size(result.model, tmp_path), rel=0.005)
    assert not result.report.totals.model_bytes_out_zstd_estimated


def test_zstd_size_of_a_big_output_is_a_close_estimate(client, tmp_path):
    """Past 64 MiB of output, frames are sized from samples: the report says it
    estimated, and the figure stays within a percent of the zstd tool's. A
    frame of a tensor pruned to 90% and one left dense compress very
    differently, so an estimate that ignored where it sampled would miss."""
    rng = np.random.default_rng(11)
    tensors = {f"l{i}.weight": rng.standard_normal((2048, 1024), dtype=np.float32) for i in range(12)}
    rules = [{"regex": r"^l[02468]\.weight$", "method": "magnitude", "sparsity": 0.9},
             {"regex": r"^l", "method": "none"}]
    result = client.compress(safetensors_io.dumps(tensors), rules=rules)
    assert len(result.model) > 80 << 20
    totals = result.report.totals
    assert totals.model_bytes_out_zstd_estimated
    assert totals.model_bytes_out_zstd == pytest.approx(_zstd_size(result.model, tmp_path), rel=0.01)
