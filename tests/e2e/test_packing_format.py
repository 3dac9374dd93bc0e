"""Packed output read back by client/python/bonsai/packing.py.

The build writes a compressed sample model twice, dense and packed
(bonsai-packing-samples, from tests/unit/packing_samples.h); here the
packed safetensors must unpack to exactly the dense tensors, and the packed
ONNX must pass onnx.checker, unpack to the dense weights, and compute the
same outputs in onnxruntime.
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from bonsai import packing

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SAMPLES_TOOL = os.environ.get("BONSAI_PACKING_SAMPLES_TOOL",
                              os.path.join(REPO, "build", "bin", "bonsai-packing-samples"))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    if not os.path.exists(SAMPLES_TOOL):
        pytest.fail(f"no {SAMPLES_TOOL}: build it (make build) or set BONSAI_PACKING_SAMPLES_TOOL")
    directory = tmp_path_factory.mktemp("packing")
    subprocess.run([SAMPLES_TOOL, str(directory)], check=True, capture_output=True, timeout=120)
    return {name: (directory / name).read_bytes() for name in os.listdir(directory)}


def test_packed_safetensors_unpack_bit_for_bit_to_the_dense_output(samples):
    dense = packing.unpack(samples["sample.dense.safetensors"], bfloat16="bits")
    packed = packing.unpack(samples["sample.packed.safetensors"], bfloat16="bits")
    assert sorted(packed) == sorted(dense)
    for name, array in dense.items():
        assert packed[name].dtype == array.dtype, name
        assert packed[name].shape == array.shape, name
        assert packed[name].tobytes() == array.tobytes(), name


def test_packed_safetensors_describe_every_packed_tensor(samples):
    _, metadata, _ = packing._parse(samples["sample.packed.safetensors"])
    encodings = {key[len("bonsai.packed."):]: json.loads(value)["encoding"]
                 for key, value in metadata.items() if key.startswith("bonsai.packed.")}
    assert encodings == {"sparse.weight": "bitmask", "sparse_bf16.weight": "bitmask",
                         "nm.weight": "nm", "nm3d.weight": "nm", "binary.weight": "binary",
                         "ternary.weight": "ternary"}
    assert metadata["format"] == "pt"  # the model's own metadata is kept


def test_bfloat16_unpacks_to_exact_float32(samples):
    bits = packing.unpack(samples["sample.packed.safetensors"], bfloat16="bits")["sparse_bf16.weight"]
    floats = packing.unpack(samples["sample.packed.safetensors"])["sparse_bf16.weight"]
    assert floats.dtype == np.float32
    assert np.array_equal((floats.view(np.uint32) >> 16).astype(np.uint16), bits)
    assert np.signbit(floats.reshape(-1)[0]) and floats.reshape(-1)[0] == 0.0  # -0.0 kept


def _initializers(model):
    from onnx import numpy_helper
    return {t.name: numpy_helper.to_array(t) for g in packing._graphs(model.graph) for t in g.initializer}


def test_packed_onnx_passes_the_checker_and_unpacks_to_the_dense_weights(samples):
    import onnx
    packed = onnx.load_from_string(samples["sample.packed.onnx"])
    onnx.checker.check_model(packed)
    assert len(packed.graph.sparse_initializer) == 2
    unpacked = packing.unpack_onnx(samples["sample.packed.onnx"])
    onnx.checker.check_model(unpacked)
    dense = _initializers(onnx.load_from_string(samples["sample.dense.onnx"]))
    restored = _initializers(unpacked)
    assert sorted(restored) == sorted(dense)
    for name, array in dense.items():
        assert restored[name].tobytes() == array.tobytes(), name


def test_packed_onnx_computes_the_same_outputs_in_onnxruntime(samples):
    import ort_runner
    try:
        ort_runner.check_runtime()
    except ort_runner.RuntimeMissing as missing:
        pytest.skip(str(missing))
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 16)
    dense = ort_runner.run_onnx(samples["sample.dense.onnx"], {"x": x})
    packed = ort_runner.run_onnx(samples["sample.packed.onnx"], {"x": x})
    assert np.array_equal(dense["y"], packed["y"])
