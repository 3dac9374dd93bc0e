"""Large models stream through intact; identical requests give identical bytes."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

import models
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb

BIG_SHAPE = (4608, 4096)  # 72 MiB of float32: more than 64 MiB


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    rng = np.random.default_rng(11)
    tensors = {"big.weight": rng.standard_normal(BIG_SHAPE, dtype=np.float32),
               "big.bias": rng.standard_normal(BIG_SHAPE[0], dtype=np.float32),
               "head.weight": rng.standard_normal((10, BIG_SHAPE[0]), dtype=np.float32)}
    path = tmp_path_factory.mktemp("big") / "big.safetensors"
    safetensors_io.write(path, tensors)
    assert path.stat().st_size > 64 << 20
    return path, tensors


@pytest.mark.timeout(600)
def test_model_over_64_mib_streams_in_and_out_intact(client, big_model, tmp_path):
    path, tensors = big_model
    out_path = tmp_path / "pruned.safetensors"
    result = client.compress(str(path), method="magnitude", sparsity=0.5, output_path=str(out_path))
    assert result.model is None
    data = out_path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == result.report.files[0].sha256
    assert len(data) == result.report.totals.model_bytes_out
    assert result.report.totals.model_bytes_in == path.stat().st_size
    out = safetensors_io.loads(data)
    np.testing.assert_array_equal(out["big.bias"], tensors["big.bias"])
    for name in ("big.weight", "head.weight"):
        original, pruned = tensors[name], out[name]
        keep = pruned != 0
        assert int((~keep).sum()) == round(0.5 * original.size), name
        np.testing.assert_array_equal(pruned[keep], original[keep])
        # Every pruned magnitude is at most every kept one (ties may fall either way).
        assert np.abs(original[~keep]).max() <= np.abs(original[keep]).min()


@pytest.mark.timeout(600)
def test_model_over_64_mib_streams_from_a_file_object_into_memory(client, big_model):
    path, tensors = big_model
    with open(path, "rb") as f:
        result = client.compress(f, method="magnitude", sparsity=0.25, include=["^big\\.weight$"],
                                 include_only=True)
    assert hashlib.sha256(result.model).hexdigest() == result.report.files[0].sha256
    out = safetensors_io.loads(result.model)
    np.testing.assert_array_equal(out["head.weight"], tensors["head.weight"])
    assert int((out["big.weight"] == 0).sum()) == round(0.25 * tensors["big.weight"].size)


@pytest.mark.timeout(600)
def test_every_file_chunk_comes_before_the_report_which_is_last(client, big_model):
    """The protocol's order: progress and the output's file_chunks (each file's
    chunks in order, one file after another), then the report, last of all."""
    path, _ = big_model
    data = path.read_bytes()
    files = [pb.FileDeclaration(name="big.safetensors", size_bytes=len(data))]

    def requests():
        yield pb.CompressRequest(spec=pb.CompressionSpec(method="magnitude", sparsity=0.5, files=files))
        for start in range(0, len(data), 1 << 20):
            yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=data[start:start + (1 << 20)]))

    kinds, output = [], []
    report = None
    for response in client.stub.Compress(requests(), timeout=300):
        kind = response.WhichOneof("payload")
        kinds.append(kind)
        if kind == "file_chunk":
            assert response.file_chunk.file == 0
            output.append(response.file_chunk.data)
        elif kind == "report":
            report = response.report
    assert kinds[-1] == "report" and kinds.count("report") == 1, kinds[-5:]
    assert kinds.count("file_chunk") > 1  # 72 MiB does not go out as one message
    out = b"".join(output)
    assert [(f.name, f.role, f.bytes_in, f.bytes_out) for f in report.files] == [
        ("big.safetensors", "model", len(data), len(out))]
    assert hashlib.sha256(out).hexdigest() == report.files[0].sha256
    assert report.timings.send_seconds > 0
    assert report.timings.total_seconds >= report.timings.send_seconds


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("fixture", ["cnn_onnx", "cnn_safetensors"])
def test_identical_requests_give_byte_identical_outputs(client, request, fixture, scope):
    data = request.getfixturevalue(fixture)
    first = client.compress(data, method="magnitude", sparsity=0.6, scope=scope)
    second = client.compress(data, method="magnitude", sparsity=0.6, scope=scope)
    assert first.model == second.model
    assert first.report.files[0].sha256 == second.report.files[0].sha256


def test_tied_magnitudes_are_pruned_the_same_way_every_time(client):
    ties = {"w.weight": np.tile(np.array([1, -1, 2, -2], np.float32), (16, 4))}
    data = safetensors_io.dumps(ties)
    outputs = {client.compress(data, method="magnitude", sparsity=0.3).model for _ in range(3)}
    assert len(outputs) == 1
    out = safetensors_io.loads(outputs.pop())["w.weight"]
    assert int((out == 0).sum()) == round(0.3 * out.size)


@pytest.fixture(scope="module")
def big_onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(12)
    w = rng.standard_normal((BIG_SHAPE[1], BIG_SHAPE[0]), dtype=np.float32)  # MatMul B: [in, out]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "big.weight"], ["output"])], "big",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, BIG_SHAPE[1]])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, BIG_SHAPE[0]])],
        initializer=[numpy_helper.from_array(w, "big.weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    data = model.SerializeToString()
    assert len(data) > 64 << 20
    return data, w


@pytest.mark.timeout(600)
def test_onnx_model_over_64_mib_streams_in_and_out_intact(client, big_onnx):
    import onnx
    data, w = big_onnx
    result = client.compress(data, method="magnitude", sparsity=0.5)
    assert hashlib.sha256(result.model).hexdigest() == result.report.files[0].sha256
    pruned = models.onnx_initializers(result.model)["big.weight"]
    onnx.checker.check_model(onnx.load_from_string(result.model))
    keep = pruned != 0
    assert int((~keep).sum()) == round(0.5 * w.size)
    np.testing.assert_array_equal(pruned[keep], w[keep])
