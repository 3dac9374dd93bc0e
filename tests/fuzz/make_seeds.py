"""Writes the fuzz targets' seed corpora into tests/fuzz/seeds/<target>/.

Each seed is a tiny valid input that reaches one feature (a dtype, a packing,
a subgraph, a recipe), so the fuzzer starts past the parsers' first checks.
The seeds are committed; rerun after changing this file:

    PYTHONPATH=client/python /usr/bin/python3 tests/fuzz/make_seeds.py
"""
from __future__ import annotations

import json
import pathlib
import shutil
import struct

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from bonsai.v1 import compressor_pb2 as pb

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = HERE / "seeds"


def safetensors(tensors: dict, metadata: dict | None = None) -> bytes:
    """tensors: name -> (dtype name, shape, raw bytes); laid out in order."""
    header, data = {}, b""
    if metadata:
        header["__metadata__"] = metadata
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(shape, values=None):
    a = np.arange(1, int(np.prod(shape)) + 1, dtype=np.float32) * 0.25 - 1 if values is None else values
    return ("F32", shape, np.asarray(a, np.float32).reshape(shape).tobytes())


def safetensors_seeds():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    bf16 = (rng.standard_normal(8).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    sparse = w.copy()
    sparse[:, 1::2] = 0
    yield "model", safetensors({
        "layer.weight": ("F32", (4, 8), w.tobytes()),
        "layer.bias": f32((4,)),
        "embed_tokens.weight": ("F16", (3, 4), rng.standard_normal(12).astype(np.float16).tobytes()),
        "ids": ("I64", (3,), np.array([7, 8, 9], np.int64).tobytes()),
    }, {"format": "pt"})
    yield "dtypes", safetensors({
        "a.weight": ("BF16", (2, 4), bf16.tobytes()),
        "b.weight": ("F64", (2, 2), np.array([1.5, -2, 0, 3], np.float64).tobytes()),
        "c.weight": ("F16", (2, 2), np.array([np.nan, np.inf, -0.0, 1e-7], np.float16).tobytes()),
        "mask": ("BOOL", (2,), b"\x01\x00"),
    })
    yield "zero_elements", safetensors({"a": f32((0,)), "b": f32((2, 0, 3)), "c": f32((1,))})
    yield "packable", safetensors({
        "sparse.weight": ("F32", (4, 8), sparse.tobytes()),
        "binary.weight": ("F32", (2, 8), np.where(w[:2] < 0, -0.5, 0.5).astype(np.float32).tobytes()),
        "conv.weight": ("F32", (2, 4, 1, 2), np.where(w[2:] < 0, 0, 0.5).astype(np.float32).tobytes()),
    })


def onnx_model(nodes, initializers, **kwargs) -> bytes:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], **kwargs)
    model.ir_version = 8
    return model.SerializeToString()


def onnx_seeds():
    rng = np.random.default_rng(1)
    raw = lambda name, shape, dtype=np.float32: numpy_helper.from_array(
        rng.standard_normal(shape).astype(dtype), name)
    typed = helper.make_tensor("W_typed", TensorProto.FLOAT, (3, 2), rng.standard_normal(6).tolist())
    yield "layers", onnx_model([
        helper.make_node("Gemm", ["x", "W_gemm", "b"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "W_typed"], ["m"]),
        helper.make_node("Reshape", ["m", "shape"], ["r"]),
        helper.make_node("Conv", ["r", "W_conv"], ["c"], group=1),
        helper.make_node("ConvTranspose", ["c", "W_ct"], ["y"]),
    ], [raw("W_gemm", (3, 4)), raw("b", (3,)), typed, raw("W_conv", (2, 1, 3, 3), np.float16),
        raw("W_ct", (2, 2, 1, 1), np.float64), numpy_helper.from_array(np.array([1, -1], np.int64), "shape")])
    const = helper.make_node("Constant", [], ["W_const"], value=raw("W_const", (2, 2)))
    branch = lambda name, op: helper.make_graph(
        [helper.make_node("Constant", [], [f"W_{name}"], value=raw(f"W_{name}", (2, 2))),
         helper.make_node(op, ["m", f"W_{name}"], [f"y_{name}"])],
        name, [], [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, None)])
    yield "subgraphs", onnx_model([
        const,
        helper.make_node("MatMul", ["x", "W_const"], ["m"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then", "MatMul"),
                         else_branch=branch("else", "Gemm")),
    ], [numpy_helper.from_array(np.array(True), "cond")])
    empty = numpy_helper.from_array(np.zeros((0, 4), np.float32), "W_empty")
    half = helper.make_tensor("W_half", TensorProto.FLOAT16, (2, 2),
                              np.array([1, -2, 0, 3], np.float16).view(np.uint16).tolist())
    bf16 = helper.make_tensor("W_bf16", TensorProto.BFLOAT16, (2, 2), [0x3f80, 0xbf80, 0, 0x4040])
    yield "storage", onnx_model([
        helper.make_node("MatMul", ["x", "W_empty"], ["a"]),
        helper.make_node("MatMul", ["a", "W_half"], ["b"]),
        helper.make_node("MatMul", ["b", "W_bf16"], ["c"]),
        helper.make_node("Conv", ["c", "W_double"], ["y"]),
    ], [empty, half, bf16, helper.make_tensor("W_double", TensorProto.DOUBLE, (1, 1, 1, 2), [0.5, -1.0])])


def calibration_seeds():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    gram = (x.T @ x).astype(np.float32)
    yield "activations", safetensors({
        "fc.weight": ("F32", (6, 4), x.tobytes()),
        "conv.weight": ("F16", (3, 2), x[:3, :2].astype(np.float16).tobytes()),
    })
    yield "gram", safetensors({
        "fc.weight.gram": ("F32", (4, 4), gram.tobytes()),
        "fc.weight.samples": ("I64", (1,), np.array([6], np.int64).tobytes()),
        "b.weight.gram": ("F64", (2, 2), gram[:2, :2].astype(np.float64).tobytes()),
        "b.weight.samples": ("F64", (1,), np.array([6.0]).tobytes()),
    })
    yield "metadata_samples", safetensors({
        "fc.weight.gram": ("BF16", (2, 2), (gram[:2, :2].view(np.uint32) >> 16).astype(np.uint16).tobytes()),
        "fc.weight": ("F32", (1, 2), x[0, :2].tobytes()),
        "c.weight.samples": ("F32", (1,), np.array([3.0], np.float32).tobytes()),
        "c.weight.gram": ("F32", (1, 1), np.array([2.0], np.float32).tobytes()),
    }, {"fc.weight.samples": "6"})


def spec_seeds():
    yield "magnitude", pb.CompressionSpec(method="magnitude", sparsity=0.5, scope=pb.SCOPE_GLOBAL,
                                          include=["conv"], exclude=["bias$"])
    yield "nm", pb.CompressionSpec(method="nm", options=pb.MethodOptions(nm=pb.NmOptions(n=2, m=4)))
    yield "structured", pb.CompressionSpec(
        method="structured", sparsity=0.25,
        options=pb.MethodOptions(structured=pb.StructuredOptions(norm=pb.NORM_L1,
                                                                 mode=pb.STRUCTURED_MODE_PHYSICAL)))
    yield "sparsegpt", pb.CompressionSpec(method="sparsegpt", sparsity=0.7,
                                          options=pb.MethodOptions(sparsegpt=pb.SparseGptOptions(
                                              block_size=64, dampening=0.01)),
                                          sparsity_overrides={"conv.weight": 0.3})
    yield "recipe", pb.CompressionSpec(rules=[
        pb.Rule(tensor_regex=r"^layers\.0\.|^lm_head", method="none", name="ends"),
        pb.Rule(tensor_regex=r"attn\.(q|k|v|o)_proj", method="nm",
                options=pb.MethodOptions(nm=pb.NmOptions(n=2, m=4))),
        pb.Rule(tensor_regex=r"mlp\.", method="wanda", sparsity=0.6),
        pb.Rule(tensor_regex=r"conv", method="ternarize",
                options=pb.MethodOptions(ternarize=pb.TernarizeOptions(per_channel=True))),
    ], include=["embed"], include_only=True, output=pb.OUTPUT_MODE_PACKED)


def main():
    for target, seeds in (("safetensors", safetensors_seeds()), ("onnx", onnx_seeds()),
                          ("calibration", calibration_seeds()), ("spec", spec_seeds())):
        folder = SEEDS / target
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for name, seed in seeds:
            data = seed if isinstance(seed, bytes) else seed.SerializeToString()
            (folder / name).write_bytes(data)
    # The calibration parser reads safetensors too: its seeds serve both.
    for seed in (SEEDS / "calibration").iterdir():
        shutil.copy(seed, SEEDS / "safetensors" / f"calibration_{seed.name}")


if __name__ == "__main__":
    main()
