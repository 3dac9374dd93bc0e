"""What a Compress call returns, and the receiving end that builds it."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import tempfile
import threading
from typing import Optional

from google.protobuf import json_format

from bonsai.errors import IntegrityError
from bonsai.v1 import compressor_pb2 as pb


def to_dict(message) -> dict:
    """A protobuf message as a dict, with the proto's own field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclasses.dataclass
class CompressResult:
    """`model` is the compressed model, or None when it went to `output_path`."""

    report: pb.CompressionReport
    model: Optional[bytes] = None
    output_path: Optional[str] = None

    @property
    def report_dict(self) -> dict:
        return to_dict(self.report)

    @property
    def sha256(self) -> str:
        return self.report.output_sha256

    @property
    def sparsity(self) -> float:
        """Fraction of zeros over the selected tensors."""
        return self.report.totals.sparsity

    @property
    def bytes_in(self) -> int:
        return self.report.totals.model_bytes_in

    @property
    def bytes_out(self) -> int:
        return self.report.totals.model_bytes_out

    @property
    def warnings(self) -> list:
        return list(self.report.warnings)

    def tensor(self, name: str) -> pb.TensorReport:
        for t in self.report.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


class ModelSink:
    """Receives model chunks into memory or a file, hashing as they arrive.

    Hashing happens on a thread of its own (hashlib releases the GIL), so
    checking a multi-GB model overlaps its download and the file writes
    instead of following them. A file is written beside its
    destination and renamed into place only once the bytes are verified, so a
    failed job never leaves a partial model under the requested name.
    """

    _QUEUED_CHUNKS = 16  # bounds what waits in memory: 16 MiB at 1 MiB chunks

    def __init__(self, output_path: Optional[str]):
        self._hash = hashlib.sha256()
        self.size = 0
        self._chunks: list = []
        self._path = os.fspath(output_path) if output_path is not None else None
        self._file = None
        self._tmp_name = None
        if self._path is not None:
            directory = os.path.dirname(os.path.abspath(self._path))
            fd, self._tmp_name = tempfile.mkstemp(prefix=".bonsai-", suffix=".part", dir=directory)
            self._file = os.fdopen(fd, "wb")
        self._queue: queue.Queue = queue.Queue(maxsize=self._QUEUED_CHUNKS)
        self._error: Optional[BaseException] = None
        self._worker = threading.Thread(target=self._consume, name="bonsai-sink", daemon=True)
        self._worker.start()

    def _consume(self) -> None:
        while True:
            chunk = self._queue.get()
            if chunk is None:
                return
            if self._error is not None:
                continue  # keep draining so the receiver never blocks
            try:
                self._hash.update(chunk)
            except BaseException as err:  # raised to the caller
                self._error = err

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self.size += len(chunk)
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._chunks.append(chunk)
        self._queue.put(chunk)

    def _finish(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        if self._error is not None:
            raise self._error

    def verify(self, report: pb.CompressionReport) -> None:
        self._finish()
        digest = self._hash.hexdigest()
        expected = report.output_sha256.lower()
        if expected and digest != expected:
            raise IntegrityError(f"received model has SHA-256 {digest}, the report says {expected}")
        declared = report.totals.model_bytes_out
        if declared and declared != self.size:
            raise IntegrityError(f"received {self.size} model bytes, the report says {declared}")
        if not expected:
            raise IntegrityError("the report carries no output_sha256 to verify the model against")

    def commit(self) -> Optional[bytes]:
        if self._file is None:
            data = b"".join(self._chunks)
            self._chunks = []
            return data
        self._file.close()
        self._file = None
        os.replace(self._tmp_name, self._path)
        self._tmp_name = None
        return None

    def discard(self) -> None:
        try:
            self._finish()
        except BaseException:
            pass  # discarding anyway
        self._chunks = []
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tmp_name is not None:
            try:
                os.unlink(self._tmp_name)
            except FileNotFoundError:
                pass
            self._tmp_name = None
