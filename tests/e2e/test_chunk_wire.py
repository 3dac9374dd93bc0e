"""bonsai.chunk_wire writes and reads FileChunk messages without the protobuf
runtime's copies; protobuf itself is the reference here: every encoding must
be byte-identical to protobuf's, and every decoding must agree with protobuf's
parse of the same bytes, including encodings protobuf never writes but must
accept (fields out of order, a repeated field, unknown fields)."""
from __future__ import annotations

import os

import pytest
from google.protobuf.internal.encoder import _VarintBytes as _varint  # protobuf's own, not chunk_wire's
from google.protobuf.message import DecodeError

from bonsai import chunk_wire
from bonsai.v1 import compressor_pb2 as pb

SIZES = [0, 1, 127, 128, 16383, 16384, 1 << 20, (1 << 20) + 3]
FILES = [0, 1, 127, 128, 300, 2**32 - 1]


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("size", SIZES)
def test_a_request_chunk_is_encoded_byte_for_byte_as_protobuf_does(file, size):
    data = os.urandom(size)
    expected = pb.CompressRequest(file_chunk=pb.FileChunk(file=file, data=data)).SerializeToString()
    assert chunk_wire.encode_file_chunk(file, data) == expected


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("size", SIZES)
def test_a_response_chunk_decodes_as_protobuf_parses_it_without_copying(file, size):
    data = os.urandom(size)
    message = pb.CompressResponse(file_chunk=pb.FileChunk(file=file, data=data)).SerializeToString()
    decoded = chunk_wire.decode_response(message)
    kind, chunk = chunk_wire.payload_of(decoded)
    assert kind == "file_chunk"
    assert chunk.file == file and bytes(chunk.data) == data
    if size:
        assert isinstance(decoded, chunk_wire.FileChunkView)
        assert chunk.data.obj is message  # a view of the received bytes, not a copy


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    head = _varint((number << 3) | wire_type)
    return head + (_varint(len(payload)) + payload if wire_type == 2 else payload)


def _response_with_chunk(inner: bytes) -> bytes:
    return _field(4, 2, inner)


# Encodings a conforming parser must accept, though protobuf never writes them.
UNUSUAL = {
    "data before file": _field(2, 2, b"abc") + _field(1, 0, _varint(7)),
    "data twice, the last wins": _field(2, 2, b"first") + _field(2, 2, b"second"),
    "file twice, the last wins": _field(1, 0, _varint(3)) + _field(1, 0, _varint(9)) + _field(2, 2, b"x"),
    "a file number past 32 bits": _field(1, 0, _varint(2**35 + 5)) + _field(2, 2, b"y"),
    "an unknown varint field": _field(1, 0, _varint(2)) + _field(9, 0, _varint(1)) + _field(2, 2, b"z"),
    "an unknown bytes field": _field(2, 2, b"w") + _field(15, 2, b"ignored"),
    "no fields at all": b"",
}


@pytest.mark.parametrize("name", sorted(UNUSUAL))
def test_unusual_but_valid_chunks_decode_as_protobuf_parses_them(name):
    message = _response_with_chunk(UNUSUAL[name])
    reference = pb.CompressResponse.FromString(message)
    kind, chunk = chunk_wire.payload_of(chunk_wire.decode_response(message))
    assert kind == reference.WhichOneof("payload") == "file_chunk"
    assert chunk.file == reference.file_chunk.file
    assert bytes(chunk.data) == reference.file_chunk.data


def test_other_payloads_are_protobuf_messages():
    for response in (pb.CompressResponse(progress=pb.Progress(fraction=0.5)),
                     pb.CompressResponse(report=pb.CompressionReport(format="safetensors")),
                     pb.CompressResponse()):
        decoded = chunk_wire.decode_response(response.SerializeToString())
        assert decoded == response
        kind, value = chunk_wire.payload_of(decoded)
        assert kind == response.WhichOneof("payload")
        if kind:
            assert value == getattr(response, kind)


# Broken bytes: whatever protobuf says of them, decode_response says too.
BROKEN = {
    "chunk length past the end": _varint((4 << 3) | 2) + _varint(100) + b"short",
    "data length past its chunk": _response_with_chunk(_varint((2 << 3) | 2) + _varint(50) + b"abc"),
    "a varint that never ends": _response_with_chunk(_varint((1 << 3) | 0) + b"\xff" * 11),
    "a truncated tag": _response_with_chunk(b"\x80"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_bytes_fail_as_protobuf_fails_them(name):
    message = BROKEN[name]
    with pytest.raises(DecodeError):
        pb.CompressResponse.FromString(message)
    with pytest.raises(DecodeError):
        chunk_wire.decode_response(message)
