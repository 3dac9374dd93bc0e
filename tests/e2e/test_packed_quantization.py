"""Issue 11's packed output of quantized weights, through the running server.

safetensors: the compressed-tensors pack-quantized layout (default) and
GPTQ's, which bonsai.packing.unpack must turn back into the dense output of
the same request bit for bit; the files' parts and sizes are read here
independently to recompute bits per weight. ONNX: 8-bit DequantizeLinear and
4-bit com.microsoft MatMulNBits, which onnxruntime-node must run to the dense
dequantized model's outputs within float tolerance. Requests whose packed form
no runtime has are refused with INVALID_ARGUMENT naming the fix.
"""
from __future__ import annotations

import json
import struct

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ort_runner
from bonsai import packing, safetensors_io
from expect import expect_error

RNG = np.random.default_rng(1111)
OUT, IN = 24, 96
LINEAR = RNG.standard_normal((OUT, IN)).astype(np.float32)
SECOND = RNG.standard_normal((40, OUT)).astype(np.float32)
CONV = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32)  # 72 reduction columns
HALF = RNG.standard_normal((16, 64)).astype(np.float16)
DOUBLE = RNG.standard_normal((8, 64))  # F64


def _header(data: bytes) -> dict:
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length])


def _model() -> bytes:
    return safetensors_io.dumps({"fc.weight": LINEAR, "out.weight": SECOND, "conv.weight": CONV,
                                 "half.weight": HALF, "double.weight": DOUBLE})


def _dense_and_packed(client, model, **kwargs):
    dense = client.compress(model, output="dense", **kwargs)
    packed = client.compress(model, output="packed", **kwargs)
    return dense, packed


def _part_bytes(header: dict, names) -> int:
    return sum(header[n]["data_offsets"][1] - header[n]["data_offsets"][0] for n in names)


def _assert_unpacks_to_dense(dense_bytes: bytes, packed_bytes: bytes):
    dense = packing.unpack(dense_bytes, bfloat16="bits")
    unpacked = packing.unpack(packed_bytes, bfloat16="bits")
    assert sorted(unpacked) == sorted(dense)
    for name, array in dense.items():
        assert unpacked[name].dtype == array.dtype, name
        assert unpacked[name].shape == array.shape, name
        assert unpacked[name].tobytes() == array.tobytes(), name


# ------------------------------------------------------------- safetensors

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [0, 32, 40])
@pytest.mark.parametrize("symmetric", [False, True])
def test_pack_quantized_unpacks_bit_for_bit_to_the_dense_output(client, bits, group_size, symmetric):
    options = {"bits": bits, "group_size": group_size, "symmetric": symmetric}
    dense, packed = _dense_and_packed(client, _model(), method="rtn", options=options)
    _assert_unpacks_to_dense(dense.model, packed.model)
    header = _header(packed.model)
    metadata = header["__metadata__"]
    config = json.loads(metadata["quantization_config"])
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    (group,) = config["config_groups"].values()
    assert group["weights"]["num_bits"] == bits and group["weights"]["symmetric"] == symmetric
    assert group["weights"]["strategy"] == ("group" if group_size else "channel")
    assert sorted(group["targets"]) == ["conv", "double", "fc", "half", "out"]
    for name in ("fc.weight", "out.weight", "conv.weight", "half.weight", "double.weight"):
        assert name not in header
        assert header[name + "_packed"]["dtype"] == "I32"
        assert (name + "_zero_point" in header) == (not symmetric)


def test_pack_quantized_words_follow_compressed_tensors_layout(client):
    """Decoded here from the layout's definition, not through bonsai.packing:
    codes low-first, 32 // bits to an int32 along the input axis; zero points
    packed the same way along the output axis; signed value = code - 2^(b-1)."""
    dense, packed = _dense_and_packed(client, _model(), method="rtn",
                                      options={"bits": 4, "group_size": 32})
    tensors = safetensors_io.loads(packed.model)
    words = tensors["fc.weight_packed"].view(np.uint32)
    assert words.shape == (OUT, IN // 8)
    assert list(tensors["fc.weight_shape"]) == [OUT, IN]
    scale = tensors["fc.weight_scale"]
    zero_words = tensors["fc.weight_zero_point"].view(np.uint32)
    assert scale.shape == (OUT, IN // 32) and zero_words.shape == (OUT // 8, IN // 32)
    want = safetensors_io.loads(dense.model)["fc.weight"]
    for r in (0, 7, 23):
        for c in (0, 5, 31, 32, 95):
            signed = int((words[r, c // 8] >> (4 * (c % 8))) & 0xF) - 8
            zero = int((zero_words[r // 8, c // 32] >> (4 * (r % 8))) & 0xF) - 8
            assert np.float32(scale[r, c // 32]) * np.float32(signed - zero) == want[r, c]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_layout_unpacks_bit_for_bit_to_the_dense_output(client, bits, symmetric):
    options = {"bits": bits, "group_size": 32, "symmetric": symmetric}
    dense, packed = _dense_and_packed(client, _model(), method="rtn", options=options,
                                      quantized_layout="gptq")
    _assert_unpacks_to_dense(dense.model, packed.model)
    header = _header(packed.model)
    p = 32 // bits
    assert header["fc.qweight"]["shape"] == [IN // p, OUT]
    assert header["fc.qzeros"]["shape"] == [IN // 32, -(-OUT // p)]
    assert header["fc.scales"]["shape"] == [IN // 32, OUT]
    assert header["fc.g_idx"]["shape"] == [IN]
    config = json.loads(header["__metadata__"]["quantization_config"])
    assert config == {"quant_method": "gptq", "bits": bits, "group_size": 32, "sym": symmetric,
                      "desc_act": False, "checkpoint_format": "gptq"}


def test_gptq_method_and_joint_sparsegpt_pack_bit_for_bit(client):
    x = RNG.standard_normal((300, IN)).astype(np.float32)
    gram = (x.astype(np.float64).T @ x).astype(np.float32)
    calibration = safetensors_io.dumps({"fc.weight.gram": gram,
                                        "fc.weight.samples": np.array([300], dtype=np.int64)})
    model = safetensors_io.dumps({"fc.weight": LINEAR})
    for kwargs in ({"method": "gptq", "options": {"bits": 4, "group_size": 32, "act_order": True}},
                   {"method": "sparsegpt", "options": {"bits": 4, "n": 2, "m": 4}}):
        for layout in ("compressed-tensors", "gptq"):
            dense, packed = _dense_and_packed(client, model, calibration=calibration,
                                              quantized_layout=layout, **kwargs)
            _assert_unpacks_to_dense(dense.model, packed.model)
    # 2:4 survives packing: half of every group of four decodes to +0.0.
    w = packing.unpack(packed.model)["fc.weight"]
    assert ((w.reshape(OUT, -1, 4) == 0).sum(axis=2) >= 2).all()


def test_bits_per_weight_counts_codes_scales_and_zero_points(client):
    dense, packed = _dense_and_packed(client, _model(), method="rtn",
                                      options={"bits": 4, "group_size": 32})
    header = _header(packed.model)
    report = {t.name: t for t in packed.report.tensors}
    total_bytes = total_params = 0
    for name, shape in (("fc.weight", LINEAR.shape), ("out.weight", SECOND.shape),
                        ("conv.weight", CONV.shape), ("half.weight", HALF.shape),
                        ("double.weight", DOUBLE.shape)):
        stored = _part_bytes(header, [name + s for s in ("_packed", "_scale", "_zero_point", "_shape")])
        params = int(np.prod(shape))
        assert report[name].packed_bytes == stored
        assert report[name].bits_per_weight == pytest.approx(8 * stored / params, rel=1e-12)
        total_bytes += stored
        total_params += params
    # fc: 24 x 96 at 4 bits, 3 groups a row: codes 1152 B, scales 288 B, zeros 12 B, shape 8 B.
    assert report["fc.weight"].packed_bytes == 24 * 12 * 4 + 24 * 3 * 4 + 3 * 3 * 4 + 2 * 4
    totals = packed.report.totals
    assert totals.packed_bytes == total_bytes
    assert totals.bits_per_weight == pytest.approx(8 * total_bytes / total_params, rel=1e-12)
    assert 4 < totals.bits_per_weight < 6
    assert dense.report.totals.bits_per_weight == pytest.approx(
        8 * dense.report.totals.dense_bytes / total_params, rel=1e-12)


def test_hugging_face_folder_gets_quantization_config_and_index(client, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model-00001-of-00002.safetensors").write_bytes(safetensors_io.dumps({"fc.weight": LINEAR}))
    (folder / "model-00002-of-00002.safetensors").write_bytes(safetensors_io.dumps({"out.weight": SECOND}))
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": LINEAR.nbytes + SECOND.nbytes},
         "weight_map": {"fc.weight": "model-00001-of-00002.safetensors",
                        "out.weight": "model-00002-of-00002.safetensors"}}))
    (folder / "config.json").write_text(json.dumps({"model_type": "toy", "hidden_size": 24}))
    out = tmp_path / "out"
    client.compress(str(folder), method="rtn", options={"bits": 4, "group_size": 32}, output="packed",
                    output_path=str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "toy"
    quant = config["quantization_config"]
    assert quant["format"] == "pack-quantized"
    assert sorted(quant["config_groups"]["group_0"]["targets"]) == ["fc", "out"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["fc.weight_packed"] == "model-00001-of-00002.safetensors"
    assert index["weight_map"]["out.weight_scale"] == "model-00002-of-00002.safetensors"
    assert "fc.weight" not in index["weight_map"]
    dense = tmp_path / "dense"
    client.compress(str(folder), method="rtn", options={"bits": 4, "group_size": 32}, output_path=str(dense))
    assert (dense / "config.json").read_text() == (folder / "config.json").read_text()
    for shard in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"):
        _assert_unpacks_to_dense((dense / shard).read_bytes(), (out / shard).read_bytes())


def test_gptq_layout_with_three_bits_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_model(), method="rtn", options={"bits": 3}, output="packed",
                                         quantized_layout="gptq"),
                 "gptq packed layout", "not 3", "compressed-tensors")


def test_gptq_layout_with_mixed_settings_is_invalid_argument(client):
    rules = [{"tensor_regex": "^fc", "method": "rtn", "options": {"bits": 4, "group_size": 32}},
             {"tensor_regex": "^out", "method": "rtn", "options": {"bits": 8, "group_size": 32}}]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_model(), rules=rules, output="packed",
                                         quantized_layout="gptq"),
                 "one quantization setting", "rule[1]", "rule[0]", "compressed-tensors")


# ------------------------------------------------------------------- ONNX

def _mlp_onnx(opset: int) -> bytes:
    """x [n, 96] -> MatMul(W1 [96, 24]) -> Relu -> MatMul(W2 [24, 40]) -> y."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("MatMul", ["r", "w2"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 40])],
        [numpy_helper.from_array(LINEAR.T.copy(), "w1"), numpy_helper.from_array(SECOND.T.copy(), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10 if opset >= 21 else 8
    return model.SerializeToString()


def _gemm_conv_onnx() -> bytes:
    """A Conv and a Gemm (transB=1): 8-bit DequantizeLinear works for both."""
    gemm_w = RNG.standard_normal((10, 8 * 6 * 6)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv_w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"]),
         helper.make_node("Gemm", ["f", "gemm_w"], ["y"], transB=1)], "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
        [numpy_helper.from_array(CONV, "conv_w"), numpy_helper.from_array(gemm_w, "gemm_w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


# onnxruntime's extended optimizations fuse DequantizeLinear -> MatMul into
# an 8-bit MatMulNBits whose accuracy level (session option, default 4)
# quantizes the activations to int8 too; level 0 keeps them float32, which is
# what the packed file itself means.
FLOAT_ACTIVATIONS = {"extra": {"session": {"qdq_matmulnbits_accuracy_level": "0"}}}


def _run(model: bytes, x: np.ndarray, session_options=None) -> np.ndarray:
    return ort_runner.run_onnx(model, {"x": x}, session_options)["y"]


def _op_types(model: bytes):
    return [(n.domain, n.op_type) for n in onnx.load_from_string(model).graph.node]


@pytest.fixture(scope="module")
def ort():
    try:
        ort_runner.check_runtime()
    except ort_runner.RuntimeMissing as missing:
        pytest.fail(str(missing))


def _close(packed_y, dense_y):
    scale = np.abs(dense_y).max()
    np.testing.assert_allclose(packed_y, dense_y, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("group_size,opset", [(0, 13), (32, 21), (40, 21)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_eight_bit_dequantize_linear_runs_in_onnxruntime(client, ort, group_size, opset, symmetric):
    model = _mlp_onnx(opset)
    options = {"bits": 8, "group_size": group_size, "symmetric": symmetric}
    dense, packed = _dense_and_packed(client, model, method="rtn", options=options)
    assert _op_types(packed.model)[:2] == [("", "DequantizeLinear")] * 2
    proto = onnx.load_from_string(packed.model)
    names = {t.name for t in proto.graph.initializer}
    assert {"w1_quantized", "w1_scale", "w1_zero_point"} <= names and "w1" not in names
    x = RNG.standard_normal((5, IN)).astype(np.float32)
    _close(_run(packed.model, x, FLOAT_ACTIVATIONS), _run(dense.model, x))
    # With onnxruntime's default options the fused kernel's int8 activations
    # cost a little accuracy, the price of its speed, not of the file.
    np.testing.assert_allclose(_run(packed.model, x), _run(dense.model, x), rtol=0,
                               atol=0.02 * np.abs(_run(dense.model, x)).max())
    # DequantizeLinear gives back the dense weights exactly: (q - zero) * scale in float32.
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    dense_w = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(dense.model).graph.initializer}
    q, s, z = (values["w1_quantized"].astype(np.int32), values["w1_scale"], values["w1_zero_point"].astype(np.int32))
    if group_size == 0:
        rebuilt = (q - z[None, :]).astype(np.float32) * s[None, :]
    else:
        rows = np.arange(IN) // group_size
        rebuilt = (q - z[rows, :]).astype(np.float32) * s[rows, :]
    assert rebuilt.tobytes() == dense_w["w1"].tobytes()


def test_eight_bit_conv_and_gemm_per_channel_run_in_onnxruntime(client, ort):
    model = _gemm_conv_onnx()
    dense, packed = _dense_and_packed(client, model, method="rtn", options={"bits": 8, "group_size": 0})
    assert [t for t in _op_types(packed.model) if t[1] == "DequantizeLinear"] == [("", "DequantizeLinear")] * 2
    x = RNG.standard_normal((2, 8, 8, 8)).astype(np.float32)
    _close(_run(packed.model, x, FLOAT_ACTIVATIONS), _run(dense.model, x))
    assert packed.report.totals.bits_per_weight == pytest.approx(
        8 * packed.report.totals.packed_bytes / packed.report.totals.prunable_params)
    assert 8 < packed.report.totals.bits_per_weight < 9


@pytest.mark.parametrize("group_size", [16, 32, 64])
@pytest.mark.parametrize("symmetric", [False, True])
def test_four_bit_matmul_nbits_runs_in_onnxruntime(client, ort, group_size, symmetric):
    model = _mlp_onnx(13)
    options = {"bits": 4, "group_size": group_size, "symmetric": symmetric}
    dense, packed = _dense_and_packed(client, model, method="rtn", options=options)
    assert _op_types(packed.model) == [("com.microsoft", "MatMulNBits"), ("", "Relu"),
                                       ("com.microsoft", "MatMulNBits")]
    proto = onnx.load_from_string(packed.model)
    assert any(o.domain == "com.microsoft" for o in proto.opset_import)
    node = proto.graph.node[0]
    attrs = {a.name: a.i for a in node.attribute}
    assert attrs == {"K": IN, "N": OUT, "bits": 4, "block_size": group_size}
    x = RNG.standard_normal((5, IN)).astype(np.float32)
    _close(_run(packed.model, x), _run(dense.model, x))
    t = {r.name: r for r in packed.report.tensors}["w1"]
    blocks = -(-IN // group_size)
    expected = OUT * blocks * group_size // 2 + OUT * blocks * 4 + (0 if symmetric else OUT * -(-blocks // 2))
    assert t.packed_bytes == expected
    assert t.bits_per_weight == pytest.approx(8 * expected / (IN * OUT))


def test_four_bit_gptq_and_sparsegpt_run_in_onnxruntime(client, ort):
    x_cal = RNG.standard_normal((300, IN)).astype(np.float32)
    gram = (x_cal.astype(np.float64).T @ x_cal).astype(np.float32)
    calibration = safetensors_io.dumps({"w1.gram": gram, "w1.samples": np.array([300], dtype=np.int64)})
    model = _mlp_onnx(13)
    x = RNG.standard_normal((5, IN)).astype(np.float32)
    for kwargs in ({"method": "gptq", "options": {"bits": 4, "group_size": 32}},
                   {"method": "sparsegpt", "options": {"bits": 4, "group_size": 32, "n": 2, "m": 4}}):
        dense, packed = _dense_and_packed(client, model, calibration=calibration, include=["^w1$"],
                                          include_only=True, **kwargs)
        assert _op_types(packed.model)[0] == ("com.microsoft", "MatMulNBits")
        _close(_run(packed.model, x), _run(dense.model, x))


def _shared_weight_onnx(second_op: str) -> bytes:
    """One weight w [96, 24] read by a MatMul and by `second_op` (MatMul or Gemm)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node(second_op, ["x", "w"], ["b"]), helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, IN])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, OUT])],
                              [numpy_helper.from_array(LINEAR.T.copy(), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_four_bit_weight_read_by_two_matmuls_replaces_both(client, ort):
    dense, packed = _dense_and_packed(client, _shared_weight_onnx("MatMul"), method="rtn",
                                      options={"bits": 4, "group_size": 32})
    assert [t[1] for t in _op_types(packed.model)] == ["MatMulNBits", "MatMulNBits", "Add"]
    x = RNG.standard_normal((3, IN)).astype(np.float32)
    _close(_run(packed.model, x), _run(dense.model, x))


def test_four_bit_weight_also_read_by_a_gemm_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_shared_weight_onnx("Gemm"), method="rtn",
                                         options={"bits": 4, "group_size": 32}, output="packed"),
                 "\"w\"", "Gemm", "MatMulNBits", "bits 8")


@pytest.mark.parametrize("bits", [2, 3])
def test_two_and_three_bit_onnx_packing_is_invalid_argument(client, bits):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_mlp_onnx(13), method="rtn", options={"bits": bits}, output="packed"),
                 f"{bits}-bit", "bits 8", "output dense")


def test_four_bit_packing_of_a_conv_is_invalid_argument_naming_matmulnbits(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_gemm_conv_onnx(), method="rtn", options={"bits": 4, "group_size": 0},
                                         output="packed"),
                 "conv_w", "MatMulNBits", "Conv.W", "bits 8")


def test_four_bit_packing_with_a_block_that_is_no_power_of_two_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_mlp_onnx(13), method="rtn", options={"bits": 4, "group_size": 24},
                                         output="packed"),
                 "MatMulNBits", "power of two", "group_size")


def test_blocked_dequantize_linear_on_an_old_opset_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_mlp_onnx(13), method="rtn", options={"bits": 8, "group_size": 32},
                                         output="packed"),
                 "opset is 13", "opset 21", "group_size 0")


def test_eight_bit_blocked_conv_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_gemm_conv_onnx(), method="rtn", options={"bits": 8, "group_size": 24},
                                         output="packed"),
                 "conv_w", "group_size 0")


def test_packed_quantized_output_is_byte_identical_across_runs(client):
    for model, options in ((_model(), {"bits": 3, "group_size": 40}), (_mlp_onnx(13), {"bits": 4, "group_size": 32}),
                           (_mlp_onnx(21), {"bits": 8, "group_size": 32})):
        first = client.compress(model, method="rtn", options=options, output="packed")
        second = client.compress(model, method="rtn", options=options, output="packed")
        assert first.model == second.model
        assert [f.sha256 for f in first.report.files] == [f.sha256 for f in second.report.files]


# -------------------------------------------------------------------- CLI

def test_cli_report_table_shows_stored_bytes_and_bits_per_weight_when_packed(server, tmp_path):
    import os
    import subprocess
    src, out, report = tmp_path / "m.safetensors", tmp_path / "q.safetensors", tmp_path / "r.json"
    src.write_bytes(_model())
    client_dir = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "client", "python"))

    def cli(*extra):
        return subprocess.run(
            ["/usr/bin/python3", "-m", "bonsai", "compress", str(src), "-o", str(out), "--method", "rtn",
             "--bits", "4", "--group-size", "32", "--report-json", str(report), "--quiet", *extra],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=client_dir, BONSAI_TARGET=server.target),
            timeout=300)

    proc = cli("--output", "packed", "--quantized-layout", "gptq")
    assert proc.returncode == 0, proc.stderr
    assert "fc.qweight" in _header(out.read_bytes())
    data = json.loads(report.read_text())
    bits = data["totals"]["bits_per_weight"]
    assert 4 < bits < 8  # tiny layers: scales, zeros and g_idx weigh a lot
    header = proc.stdout.splitlines()[0].split()
    assert "stored" in header and "bits/w" in header
    fc = next(line for line in proc.stdout.splitlines() if line.startswith("fc.weight"))
    fc_bits = next(t["bits_per_weight"] for t in data["tensors"] if t["name"] == "fc.weight")
    assert f"{fc_bits:.3f}" in fc.split()
    assert f"{bits:.3f} bits per weight" in proc.stdout
    dense = cli()
    assert dense.returncode == 0, dense.stderr
    assert "bits/w" not in dense.stdout.splitlines()[0]
