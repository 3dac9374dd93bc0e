"""Reading bonsai's packed output (``output=OUTPUT_MODE_PACKED``) back into dense tensors.

Packed output stays a valid file of its own format; this module undoes the
packing. It needs numpy only (and onnx for ``unpack_onnx``).

safetensors
-----------
A packed tensor ``<name>`` is replaced by plain safetensors tensors named
``<name>.<part>``, and ``__metadata__`` gets ``"bonsai.packing": "1"`` plus one
entry per packed tensor::

    "bonsai.packed.<name>": '{"name": ..., "shape": [...], "dtype": "F16",
                              "encoding": "bitmask" | "nm" | "binary" | "ternary",
                              "axis": ..., "n": ..., "m": ...,
                              "parts": {"<part>": "<name>.<part>", ...}}'

(a JSON object stored as a string, since safetensors metadata values are
strings). Tensors whose packed form would not be smaller, or whose values do
not fit their encoding exactly, are stored dense under their own name. Bit
order is little-endian within bytes everywhere: element ``i`` of a 1-bit
field is bit ``i % 8`` (least significant first) of byte ``i // 8``; of a
2-bit field, bits ``2*(i % 4)`` and ``2*(i % 4)+1`` of byte ``i // 4``.
Elements count in row-major (C) order of the original shape.

``bitmask``
    ``.bitmask`` U8 ``[ceil(count/8)]``: bit set when the element is not +0.0
    (a -0.0 counts as set, so the output is bit-exact);
    ``.values`` (own dtype) ``[nnz]``: the set elements in order.
``nm`` (``n`` of every ``m`` kept, groups along ``axis``, the reduction axis)
    View the tensor with ``axis`` moved last as ``rows x R``; each row has
    ``G = R // m`` groups. ``.values`` (own dtype) ``[rows, G, n]`` and
    ``.indices`` U8 ``[rows, G, n]`` (position inside its group, ascending;
    groups with fewer than n non-zeros are padded with +0.0 at unused
    positions); ``.tail`` (own dtype) ``[rows, R - G*m]`` when R is not a
    multiple of m: the last columns, dense, as the method left them.
``binary``
    ``.signs`` U8 ``[ceil(count/8)]``: bit set when negative; ``.scales`` F32
    ``[channels]``, one per index of the output ``axis`` (``axis`` -1: one
    scale for the whole tensor). Element = -scale if the bit is set, else +scale.
``ternary``
    ``.codes`` U8 ``[ceil(count/4)]``, 2 bits per element: 0 = +0.0,
    1 = +scale, 2 = -scale, 3 = -0.0; ``.scales`` as for binary.

Quantized weights (rtn, gptq, sparsegpt with bits) are stored in a layout
that runtimes read without bonsai, chosen by the request's
``quantized_layout``. Either way a weight is ``scale * (code - zero)``
computed in float32 (codes and zero points integers, scales float32) and
then rounded to the tensor's own dtype, which is exactly the dense output.
The tensor is viewed as ``rows x cols``: output channels by the flattened
remaining axes (``in * kh * kw`` for a Conv weight); group ``g`` of a row is
columns ``[g * group_size, (g + 1) * group_size)``, the last one shorter when
``group_size`` does not divide ``cols``. Words are little-endian int32; a
word holds ``p = 32 // bits`` codes (10 at 3 bits), code ``j`` at bits
``j * bits``. Its description has ``"bits"``, ``"group_size"`` (columns per
group) and ``"symmetric"``, and ``__metadata__`` has ``quantization_config``
(a JSON string; the same object goes into a folder's ``config.json``).

``pack-quantized`` (compressed-tensors, read by vLLM and llm-compressor)
    ``<w>_packed`` I32 ``[rows, ceil(cols / p)]``: codes packed along the
    columns; ``<w>_scale`` F32 ``[rows, groups]``; ``<w>_zero_point`` I32
    ``[ceil(rows / p), groups]``: zero codes packed along the rows (absent
    when symmetric: the zero code is ``2**(bits-1)``); ``<w>_shape`` I32: the
    dense shape. compressed-tensors' signed values are ``code - 2**(bits-1)``.
``gptq`` (AutoGPTQ's checkpoint format), parts named from ``<prefix>weight``
    ``<prefix>qweight`` I32 ``[ceil(cols / p), rows]``: codes packed along the
    columns; ``<prefix>qzeros`` I32 ``[groups, ceil(rows / p)]``:
    ``(zero - 1) mod 2**bits`` packed along the rows; ``<prefix>scales`` F32
    ``[groups, rows]``; ``<prefix>g_idx`` I32 ``[cols]``: each column's group.

``unpack`` returns every tensor of the file (packed or not) with the dense
values bit for bit as the dense output would hold them. numpy has no
bfloat16: BF16 tensors come back as float32 (exact) or, with
``bfloat16="bits"``, as their uint16 bit patterns.

ONNX
----
Sparse weights become standard ``graph.sparse_initializer`` entries
(SparseTensorProto: ``values`` [NNZ] in the tensor's own type, ``indices``
INT64 [NNZ] linear row-major positions in ascending order, ``dims`` the
dense shape), in the graph (or subgraph) that held the initializer. Runtimes
that support sparse initializers expand them at load; ``unpack_onnx`` turns
them back into dense initializers for tools that do not.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict, Tuple, Union

import numpy as np

# Storage as unsigned bit patterns, so that unpacking never rounds: values are
# moved, not converted.
_BITS = {"F64": np.uint64, "F32": np.uint32, "F16": np.uint16, "BF16": np.uint16}
_FLOATS = {"F64": np.float64, "F32": np.float32, "F16": np.float16}
_OTHERS = {
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
    "F8_E4M3": np.uint8, "F8_E5M2": np.uint8,
}


def _read_bytes(path_or_bytes: Union[str, os.PathLike, bytes, bytearray, memoryview]) -> bytes:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        return f.read()


def _parse(data: bytes) -> Tuple[dict, dict, memoryview]:
    if len(data) < 8:
        raise ValueError("not a safetensors file: shorter than 8 bytes")
    (length,) = struct.unpack("<Q", data[:8])
    if length > len(data) - 8:
        raise ValueError("not a safetensors file: the header runs past the end")
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {}) or {}
    return header, metadata, memoryview(data)[8 + length:]


def _raw(entry: dict, area: memoryview) -> np.ndarray:
    """A tensor's elements as a flat array of its storage type (bit patterns for floats)."""
    begin, end = entry["data_offsets"]
    dtype = _BITS.get(entry["dtype"]) or _OTHERS.get(entry["dtype"])
    if dtype is None:
        raise ValueError(f"unsupported dtype {entry['dtype']}")
    return np.frombuffer(area[begin:end], dtype=np.dtype(dtype).newbyteorder("<")).copy()


def _bits(field: np.ndarray, count: int, width: int) -> np.ndarray:
    """Element i of a packed field of `width` bits (1 or 2), little-endian within bytes."""
    per_byte = 8 // width
    shifts = np.arange(per_byte, dtype=np.uint8) * width
    values = (field.astype(np.uint8)[:, None] >> shifts) & ((1 << width) - 1)
    return values.reshape(-1)[:count]


def _float_bits(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values (exactly representable in `dtype`) as `dtype` bit patterns."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype(np.uint16)
    return values.astype(_FLOATS[dtype]).view(_BITS[dtype])


def _channels(description: dict, count: int) -> np.ndarray:
    axis = description.get("axis", -1)
    if axis is None or axis < 0:
        return np.zeros(count, dtype=np.int64)
    shape = description["shape"]
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return (np.arange(count, dtype=np.int64) // inner) % shape[axis]


def _unpack_one(description: dict, part) -> np.ndarray:
    dtype, shape, encoding = description["dtype"], list(description["shape"]), description["encoding"]
    if encoding in ("pack-quantized", "gptq"):
        return _unpack_quantized(description, part)
    count = int(np.prod(shape, dtype=np.int64))
    storage = _BITS[dtype]
    if encoding == "bitmask":
        mask = _bits(part("bitmask"), count, 1).astype(bool)
        dense = np.zeros(count, dtype=storage)
        dense[mask] = part("values")
        return dense.reshape(shape)
    if encoding == "nm":
        axis, n, m = description["axis"], description["n"], description["m"]
        length = shape[axis]
        moved = shape[:axis] + shape[axis + 1:] + [length]
        rows, groups = int(np.prod(moved[:-1], dtype=np.int64)), length // m
        grouped = np.zeros((rows, groups, m), dtype=storage)
        np.put_along_axis(grouped, part("indices").reshape(rows, groups, n).astype(np.intp),
                          part("values").reshape(rows, groups, n), axis=2)
        dense = grouped.reshape(rows, groups * m)
        if length % m:
            dense = np.concatenate([dense, part("tail").reshape(rows, length % m)], axis=1)
        return np.ascontiguousarray(np.moveaxis(dense.reshape(moved), -1, axis))
    if encoding in ("binary", "ternary"):
        scales = part("scales").view(np.float32)[_channels(description, count)]
        if encoding == "binary":
            negative = _bits(part("signs"), count, 1).astype(bool)
            values = np.where(negative, -scales, scales)
        else:
            codes = _bits(part("codes"), count, 2)
            values = np.select([codes == 1, codes == 2, codes == 3],
                               [scales, -scales, np.float32(-0.0)], np.float32(0.0))
        return _float_bits(values, dtype).reshape(shape)
    raise ValueError(f"unknown packed encoding {encoding!r}")


def _words(part: np.ndarray) -> np.ndarray:
    return np.asarray(part).view(np.uint32)


def _unpack_codes(words: np.ndarray, bits: int, count: int, axis: int) -> np.ndarray:
    """Codes packed p = 32 // bits to a uint32 word along `axis` of a 2-D array."""
    per = 32 // bits
    shifts = (np.arange(per, dtype=np.uint32) * bits)
    mask = np.uint32((1 << bits) - 1)
    if axis == 1:
        codes = (words[:, :, None] >> shifts[None, None, :]) & mask
        return codes.reshape(words.shape[0], -1)[:, :count]
    codes = (words[:, None, :] >> shifts[None, :, None]) & mask
    return codes.reshape(-1, words.shape[1])[:count, :]


def _round_to(values: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values as `dtype` bit patterns, rounded to nearest even as bonsai stores them."""
    values = np.asarray(values, dtype=np.float32)
    if dtype == "F32":
        return values.view(np.uint32)
    if dtype == "F64":
        return values.astype(np.float64).view(np.uint64)
    if dtype == "F16":
        return values.astype(np.float16).view(np.uint16)
    if dtype == "BF16":
        bits = values.view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return rounded.astype(np.uint16)
    raise ValueError(f"unsupported dtype {dtype}")


def _unpack_quantized(description: dict, part) -> np.ndarray:
    shape, bits = list(description["shape"]), int(description["bits"])
    rows = shape[0]
    cols = int(np.prod(shape[1:], dtype=np.int64))
    width = int(description["group_size"])
    groups = -(-cols // width)
    group_of = np.arange(cols) // width
    mask = (1 << bits) - 1
    if description["encoding"] == "pack-quantized":
        codes = _unpack_codes(_words(part("packed")).reshape(rows, -1), bits, cols, axis=1)
        scales = part("scale").view(np.float32).reshape(rows, groups)
        if description["symmetric"]:
            zeros = np.full((rows, groups), 1 << (bits - 1), dtype=np.uint32)
        else:
            zeros = _unpack_codes(_words(part("zero_point")).reshape(-1, groups), bits, rows, axis=0)
    else:
        codes = _unpack_codes(_words(part("qweight")).reshape(-1, rows), bits, cols, axis=0).T
        scales = part("scales").view(np.float32).reshape(groups, rows).T
        stored = _unpack_codes(_words(part("qzeros")).reshape(groups, -1), bits, rows, axis=1)
        zeros = ((stored + 1) & mask).T
        if not np.array_equal(part("g_idx").view(np.int32), group_of):
            raise ValueError(f"{description['name']}: g_idx is not the natural group order")
    steps = (codes.astype(np.int32) - zeros[:, group_of].astype(np.int32)).astype(np.float32)
    values = scales[:, group_of] * steps  # float32, one rounding, as the server's grid
    return _round_to(values, description["dtype"]).reshape(shape)


def _as_numbers(bits: np.ndarray, dtype: str, bfloat16: str) -> np.ndarray:
    if dtype == "BF16":
        return bits if bfloat16 == "bits" else (bits.astype(np.uint32) << 16).view(np.float32)
    return bits.view(_FLOATS[dtype]) if dtype in _FLOATS else bits


def unpack(path_or_bytes, bfloat16: str = "float32") -> Dict[str, np.ndarray]:
    """Every tensor of a (packed or dense) bonsai safetensors output, dense, by name.

    bfloat16: "float32" (default, exact) or "bits" (uint16 bit patterns).
    """
    if bfloat16 not in ("float32", "bits"):
        raise ValueError('bfloat16 must be "float32" or "bits"')
    header, metadata, area = _parse(_read_bytes(path_or_bytes))
    packed = {}
    for key, value in metadata.items():
        if key.startswith("bonsai.packed."):
            description = json.loads(value)
            packed[description["name"]] = description
    parts = {p for d in packed.values() for p in d["parts"].values()}
    tensors: Dict[str, np.ndarray] = {}
    for name, description in packed.items():
        def part(key, description=description):
            return _raw(header[description["parts"][key]], area)
        tensors[name] = _as_numbers(_unpack_one(description, part), description["dtype"], bfloat16)
    for name, entry in header.items():
        if name in parts or name in tensors:
            continue
        tensors[name] = _as_numbers(_raw(entry, area).reshape(entry["shape"]), entry["dtype"],
                                    bfloat16)
    return tensors


# ---------------------------------------------------------------- ONNX

def _graphs(graph):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _densify(sparse):
    import onnx
    from onnx import numpy_helper

    dims = [int(d) for d in sparse.dims]
    count = int(np.prod(dims, dtype=np.int64))
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
    if indices.ndim == 2:  # [NNZ, rank] coordinates
        indices = np.ravel_multi_index(tuple(indices.T), dims)
    values = sparse.values
    if values.HasField("raw_data") and values.data_type != onnx.TensorProto.STRING:
        # Move bit patterns so nothing is rounded (bfloat16 included).
        width = {1: 4, 10: 2, 16: 2, 11: 8}.get(values.data_type)
        if width is None:
            width = np.dtype(onnx.mapping.TENSOR_TYPE_TO_NP_TYPE[values.data_type]).itemsize
        storage = {2: np.uint16, 4: np.uint32, 8: np.uint64, 1: np.uint8}[width]
        dense = np.zeros(count, dtype=storage)
        dense[indices] = np.frombuffer(values.raw_data, dtype=np.dtype(storage).newbyteorder("<"))
        tensor = onnx.TensorProto()
        tensor.name = values.name
        tensor.data_type = values.data_type
        tensor.dims.extend(dims)
        tensor.raw_data = dense.astype(np.dtype(storage).newbyteorder("<")).tobytes()
        return tensor
    array = numpy_helper.to_array(values)
    dense = np.zeros(count, dtype=array.dtype)
    dense[indices] = array.reshape(-1)
    return numpy_helper.from_array(dense.reshape(dims), name=values.name)


def unpack_onnx(data: Union[bytes, str, os.PathLike]) -> "onnx.ModelProto":
    """The model with every sparse_initializer turned back into a dense initializer."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(_read_bytes(data))
    for graph in _graphs(model.graph):
        for sparse in graph.sparse_initializer:
            graph.initializer.append(_densify(sparse))
        del graph.sparse_initializer[:]
    return model
