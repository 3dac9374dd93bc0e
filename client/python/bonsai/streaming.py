"""Byte sources for uploads and the request iterators that stream them.

A model may be gigabytes: sources hand out one chunk at a time and never hold
the whole file. The Compress request iterator pauses after the spec until the
server has spoken (or briefly timed out) so that a refusal at admission arrives
before any model byte left this process, which is what makes a retry honest.
"""
from __future__ import annotations

import io
import os
import threading
from typing import BinaryIO, Callable, Iterator, Optional, Union

DEFAULT_CHUNK_BYTES = 1 << 20

ModelInput = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]


class ByteSource:
    """A re-readable stream of bytes with a size when it can be known.

    Paths and bytes can be read any number of times; a file object can be read
    again only if it is seekable (it is rewound to where it was first seen).
    """

    def __init__(self, data: ModelInput):
        self._path: Optional[str] = None
        self._buffer: Optional[memoryview] = None
        self._file: Optional[BinaryIO] = None
        self._file_start = 0
        self._reads = 0
        if isinstance(data, (str, os.PathLike)):
            self._path = os.fspath(data)
            self.size: Optional[int] = os.stat(self._path).st_size
        elif isinstance(data, (bytes, bytearray, memoryview)):
            self._buffer = memoryview(data).cast("B")
            self.size = self._buffer.nbytes
        elif hasattr(data, "read"):
            self._file = data
            self.size = _remaining_size(data)
            self._file_start = _tell(data)
        else:
            raise TypeError(f"model must be a path, bytes or a binary file object, not {type(data).__name__}")

    @property
    def rereadable(self) -> bool:
        return self._file is None or self._file_start is not None

    def chunks(self, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[bytes]:
        if self._reads and not self.rereadable:
            raise ValueError("this file object cannot be read twice (not seekable)")
        self._reads += 1
        if self._buffer is not None:
            for start in range(0, self._buffer.nbytes, chunk_bytes):
                yield bytes(self._buffer[start:start + chunk_bytes])
        elif self._path is not None:
            with open(self._path, "rb") as f:
                yield from _read_chunks(f, chunk_bytes)
        else:
            if self._file_start is not None:
                self._file.seek(self._file_start)
            yield from _read_chunks(self._file, chunk_bytes)


def _read_chunks(f: BinaryIO, chunk_bytes: int) -> Iterator[bytes]:
    while True:
        chunk = f.read(chunk_bytes)
        if not chunk:
            return
        yield bytes(chunk)


def _tell(f) -> Optional[int]:
    try:
        return f.tell() if f.seekable() else None
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None


def _remaining_size(f) -> Optional[int]:
    try:
        return os.fstat(f.fileno()).st_size - f.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    pos = _tell(f)
    if pos is None:
        return None
    end = f.seek(0, io.SEEK_END)
    f.seek(pos)
    return end - pos


class UploadRequests:
    """Request iterator: spec, [admission pause], calibration chunks, model chunks.

    `data_started` tells whether any calibration or model byte was handed to
    gRPC; until then a failed call can be retried without the server having
    received any part of the upload.
    """

    def __init__(
        self,
        first: object,
        parts: list,  # [(make_request(chunk) -> message, ByteSource)]
        chunk_bytes: int,
        admission_wait: float,
        on_bytes: Optional[Callable[[int], None]] = None,
    ):
        self._first = first
        self._parts = parts
        self._chunk_bytes = chunk_bytes
        self._admission_wait = admission_wait
        self._on_bytes = on_bytes
        self.server_spoke = threading.Event()  # set by the receiver or on call end
        self.call_done = threading.Event()
        self.data_started = False
        self.bytes_sent = 0

    def __iter__(self):
        yield self._first
        if self._admission_wait > 0:
            self.server_spoke.wait(self._admission_wait)
        # Every part's first chunk goes first: it holds a safetensors shard's
        # header, so the server knows every tensor of a sharded model and
        # starts on the first shard while the others upload.
        streams = [(make_request, source.chunks(self._chunk_bytes)) for make_request, source in self._parts]
        order = [(make_request, chunks, True) for make_request, chunks in streams] + \
                [(make_request, chunks, False) for make_request, chunks in streams]
        for make_request, chunks, first_only in order:
            for chunk in chunks:
                # gRPC may pull once more after the call ended; that chunk is
                # never sent and must not count as a started upload.
                if self.call_done.is_set():
                    return
                self.data_started = True
                yield make_request(chunk)
                self.bytes_sent += len(chunk)
                if self._on_bytes is not None:
                    self._on_bytes(len(chunk))
                if first_only:
                    break
