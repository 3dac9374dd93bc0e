"""What a Compress call returns, and the receiving end that builds it."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import tempfile
import threading
from typing import Dict, List, Optional

from google.protobuf import json_format

from bonsai.errors import IntegrityError
from bonsai.v1 import compressor_pb2 as pb


def to_dict(message) -> dict:
    """A protobuf message as a dict, with the proto's own field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


@dataclasses.dataclass
class CompressResult:
    """`model` is the compressed model when it stayed in memory (one file);
    `files` maps each output file's name to its bytes when a multi-file
    output stayed in memory; `output_path` is where it was written."""

    report: pb.CompressionReport
    model: Optional[bytes] = None
    output_path: Optional[str] = None
    files: Optional[Dict[str, bytes]] = None

    @property
    def report_dict(self) -> dict:
        return to_dict(self.report)

    @property
    def sha256(self) -> str:
        """The SHA-256 of the (first) model file."""
        return self.report.files[0].sha256 if self.report.files else ""

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

    def save_html(self, path: str, title: str = "bonsai compression report") -> None:
        """Writes the report as one self-contained HTML page with per-layer charts."""
        from bonsai import report_html
        report_html.write(self.report, path, title)

    def tensor(self, name: str) -> pb.TensorReport:
        for t in self.report.tensors:
            if t.name == name:
                return t
        raise KeyError(name)


class _FileHash:
    """One output file being received: its bytes go to a temporary file
    beside the destination (or to memory), its hash is computed on the sink's
    thread."""

    def __init__(self, name: str, path: Optional[str], created_dirs: list):
        self.name = name
        self.path = path
        self.hash = hashlib.sha256()
        self.size = 0
        self.chunks: list = []
        self.file = None
        self.tmp_name = None
        if path is not None:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                _make_dirs(directory, created_dirs)
                fd, self.tmp_name = tempfile.mkstemp(prefix=".bonsai-", suffix=".part", dir=directory)
            except OSError as err:
                # Name the user's path, not the temporary file beside it.
                raise type(err)(err.errno, f"cannot write {path}: {err.strerror}") from err
            self.file = os.fdopen(fd, "wb")


def _make_dirs(directory: str, created: list) -> None:
    missing = []
    d = directory
    while d and not os.path.isdir(d):
        missing.append(d)
        d = os.path.dirname(d)
    for d in reversed(missing):
        os.mkdir(d)
        created.append(d)


class FilesSink:
    """Receives the output files' chunks, writing and hashing each file as it
    arrives.

    Writing and hashing happen on a thread of its own (both release the GIL),
    so they overlap the download instead of holding up the next message (a
    buffered write into the page cache costs about as much as receiving). Files are written beside their destinations and renamed
    into place only once the final report has confirmed every file's SHA-256
    and size, so a failed job never leaves a file under a requested name, not
    even a partial one.
    """

    _QUEUED_CHUNKS = 16  # bounds what waits in memory: 16 MiB at 1 MiB chunks

    def __init__(self, names: List[str], paths: Optional[List[str]]):
        self._names = names
        self._paths = paths
        self._files: Dict[int, _FileHash] = {}
        self._created_dirs: list = []
        self.size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=self._QUEUED_CHUNKS)
        self._error: Optional[BaseException] = None
        self._worker = threading.Thread(target=self._consume, name="bonsai-sink", daemon=True)
        self._worker.start()

    def _consume(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # keep draining so the receiver never blocks
            target, chunk = item
            try:
                if target.file is not None:
                    target.file.write(chunk)
                target.hash.update(chunk)
            except BaseException as err:  # raised to the caller
                self._error = err

    def write(self, index: int, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        if index >= len(self._names):
            raise IntegrityError(f"the server sent bytes for file {index}, but the job has {len(self._names)}")
        target = self._files.get(index)
        if target is None:
            path = self._paths[index] if self._paths is not None else None
            target = self._files[index] = _FileHash(self._names[index], path, self._created_dirs)
        target.size += len(chunk)
        self.size += len(chunk)
        if target.file is None:
            target.chunks.append(chunk)
        self._queue.put((target, chunk))

    def _finish(self) -> None:
        if self._worker.is_alive():
            self._queue.put(None)
            self._worker.join()
        if self._error is not None:
            raise self._error

    def verify(self, report: pb.CompressionReport) -> None:
        self._finish()
        reported = {f.name: f for f in report.files}
        if len(reported) != len(self._names):
            raise IntegrityError(f"the report lists {len(reported)} output files, the job has {len(self._names)}")
        for index, name in enumerate(self._names):
            entry = reported.get(name)
            if entry is None:
                raise IntegrityError(f"the report does not list output file {name!r}")
            target = self._files.get(index)
            size = target.size if target else 0
            digest = target.hash.hexdigest() if target else hashlib.sha256().hexdigest()
            if size != entry.bytes_out:
                raise IntegrityError(f"received {size} bytes of {name}, the report says {entry.bytes_out}")
            if not entry.sha256 or digest != entry.sha256.lower():
                raise IntegrityError(f"received {name} with SHA-256 {digest}, the report says {entry.sha256 or 'none'}")

    def commit(self) -> Dict[str, bytes]:
        """Moves every file into place (or returns them, kept in memory)."""
        in_memory = {}
        for index, name in enumerate(self._names):
            target = self._files.get(index) or _FileHash(
                name, self._paths[index] if self._paths is not None else None, self._created_dirs)
            self._files[index] = target
            if target.file is None:
                in_memory[name] = b"".join(target.chunks)
                target.chunks = []
                continue
            target.file.close()
            target.file = None
            os.chmod(target.tmp_name, 0o666 & ~_umask())
            os.replace(target.tmp_name, target.path)
            target.tmp_name = None
        return in_memory

    def discard(self) -> None:
        try:
            self._finish()
        except BaseException:
            pass  # discarding anyway
        for target in self._files.values():
            target.chunks = []
            if target.file is not None:
                target.file.close()
                target.file = None
            if target.tmp_name is not None:
                try:
                    os.unlink(target.tmp_name)
                except FileNotFoundError:
                    pass
                target.tmp_name = None
        for d in reversed(self._created_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass
        self._created_dirs = []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
