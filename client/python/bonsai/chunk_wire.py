"""File chunks on the wire without protobuf's copies.

A Compress call moves the whole model through 1 MiB `FileChunk` messages
twice. Through the protobuf runtime each chunk's bytes are copied when a
request is built and again when it is serialized, and when a response is
parsed and again when `.data` is read: four extra copies of the model in a
client that shares its cores with the transfer itself. A FileChunk is the
simplest message there is (a varint and a bytes field inside one field of the
oneof), so this module writes and reads exactly that shape itself and hands
every other message to protobuf:

- `encode_file_chunk` gives the serialized CompressRequest for one chunk with
  a single copy (header + data joined);
- `decode_response` gives a `FileChunkView` whose `data` is a memoryview into
  the received bytes (no copy) for a response that is a file chunk, and the
  parsed protobuf message for anything else.

Both follow the protobuf wire format (proto3, fields in any order, unknown
fields allowed): any byte sequence a FileChunk may be serialized as decodes
here the same as through protobuf, and what does not fit the shape (an
unknown field, a second payload) falls back to protobuf's own parser.
"""
from __future__ import annotations

from typing import Tuple, Union

from bonsai.v1 import compressor_pb2 as pb

# Tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
_REQUEST_FILE_CHUNK_TAG = (4 << 3) | 2   # CompressRequest.file_chunk
_RESPONSE_FILE_CHUNK_TAG = (4 << 3) | 2  # CompressResponse.file_chunk
_FILE_TAG = (1 << 3) | 0                 # FileChunk.file
_DATA_TAG = (2 << 3) | 2                 # FileChunk.data


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(buf: memoryview, pos: int, end: int) -> Tuple[int, int]:
    """(value, position after it); ValueError when the varint runs past end
    or is longer than 10 bytes."""
    value = 0
    shift = 0
    while pos < end and shift < 70:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def encode_file_chunk(file: int, data: bytes) -> bytes:
    """The serialized CompressRequest{file_chunk: {file, data}}, as protobuf
    writes it (fields in number order, zero values omitted)."""
    inner_head = (bytes([_FILE_TAG]) + _varint(file) if file else b"") + \
        (bytes([_DATA_TAG]) + _varint(len(data)) if len(data) else b"")
    inner_size = len(inner_head) + len(data)
    return b"".join((bytes([_REQUEST_FILE_CHUNK_TAG]), _varint(inner_size), inner_head, data))


class FileChunkView:
    """A received file chunk: `file` index and `data`, a memoryview into the
    message as it arrived."""

    __slots__ = ("file", "data")

    def __init__(self, file: int, data: memoryview):
        self.file = file
        self.data = data


def _file_chunk_in(buf: memoryview, start: int, end: int) -> "FileChunkView | None":
    file = 0
    data = memoryview(b"")
    pos = start
    while pos < end:
        tag, pos = _read_varint(buf, pos, end)
        if tag == _FILE_TAG:
            file, pos = _read_varint(buf, pos, end)
        elif tag == _DATA_TAG:
            size, pos = _read_varint(buf, pos, end)
            if pos + size > end:
                raise ValueError("data runs past its message")
            data = buf[pos:pos + size]  # the last occurrence wins, as in protobuf
            pos += size
        else:
            return None  # another field: protobuf decides
    file &= 0xFFFFFFFF  # uint32: protobuf keeps the low 32 bits
    return FileChunkView(file, data)


def payload_of(response) -> Tuple[str, object]:
    """(which payload, its value) of a decoded response: ("file_chunk",
    FileChunkView) or, say, ("report", CompressionReport)."""
    if isinstance(response, FileChunkView):
        return "file_chunk", response
    kind = response.WhichOneof("payload")
    if kind == "file_chunk":  # protobuf parsed it: the same view of it
        return kind, FileChunkView(response.file_chunk.file, memoryview(response.file_chunk.data))
    return kind, getattr(response, kind) if kind else None


def _serialize_request(request) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def compress_rpc(channel):
    """Compressor.Compress on `channel`, sending requests built by
    `encode_file_chunk` (or any CompressRequest) and receiving what
    `decode_response` gives."""
    return channel.stream_stream("/bonsai.v1.Compressor/Compress",
                                 request_serializer=_serialize_request,
                                 response_deserializer=decode_response)


def decode_response(message: bytes) -> Union[FileChunkView, pb.CompressResponse]:
    """A CompressResponse as received: a FileChunkView for a file chunk, the
    protobuf message otherwise (or when the bytes are not the plain shape)."""
    buf = memoryview(message)
    end = len(buf)
    if end and buf[0] == _RESPONSE_FILE_CHUNK_TAG:
        try:
            size, pos = _read_varint(buf, 1, end)
            if pos + size == end:
                chunk = _file_chunk_in(buf, pos, end)
                if chunk is not None:
                    return chunk
        except ValueError:
            pass  # protobuf's parser gives the error
    return pb.CompressResponse.FromString(message)
