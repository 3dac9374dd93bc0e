"""A small pure-Python safetensors reader and writer (numpy arrays).

Format: an 8-byte little-endian header length, a JSON header mapping each
tensor name to {dtype, shape, data_offsets: [begin, end]} (offsets relative
to the end of the header, tensors packed without gaps), then the data. The
header is padded with spaces to a multiple of 8 so the data stays aligned.
"""
from __future__ import annotations

import json
import os
import struct
from typing import BinaryIO, Dict, Mapping, Optional, Union

import numpy as np

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def _header(tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]]) -> bytes:
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, array in tensors.items():
        dtype = np.dtype(array.dtype).newbyteorder("=")
        if dtype not in _NAMES:
            raise TypeError(f"{name}: dtype {array.dtype} has no safetensors name")
        header[name] = {"dtype": _NAMES[dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def write(destination: Union[str, os.PathLike, BinaryIO], tensors: Mapping[str, np.ndarray],
          metadata: Optional[Mapping[str, str]] = None) -> None:
    """Writes tensors (in the given order) to a path or binary file object."""
    arrays = {name: np.ascontiguousarray(np.asarray(a)).astype(np.dtype(a.dtype).newbyteorder("<"), copy=False)
              for name, a in tensors.items()}
    if isinstance(destination, (str, os.PathLike)):
        with open(destination, "wb") as f:
            return write(f, arrays, metadata)
    destination.write(_header(arrays, metadata))
    for array in arrays.values():
        destination.write(memoryview(array).cast("B") if array.size else b"")


def dumps(tensors: Mapping[str, np.ndarray], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    import io
    buffer = io.BytesIO()
    write(buffer, tensors, metadata)
    return buffer.getvalue()


def read_header(data: bytes) -> dict:
    (length,) = struct.unpack_from("<Q", data, 0)
    return json.loads(bytes(data[8:8 + length]))


def loads(data: bytes) -> Dict[str, np.ndarray]:
    """Parses safetensors bytes into numpy arrays (copies; the order is kept)."""
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(bytes(data[8:8 + length]))
    base = 8 + length
    result = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]]).newbyteorder("<")
        array = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=base + begin)
        result[name] = array.reshape(entry["shape"]).astype(dtype.newbyteorder("="))
    return result


def load(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    with open(path, "rb") as f:
        return loads(f.read())
