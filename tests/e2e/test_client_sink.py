"""The client's receiving end: bytes are verified before a model file appears."""
from __future__ import annotations

import hashlib
import os

import pytest

from bonsai.errors import IntegrityError
from bonsai.results import ModelSink
from bonsai.v1 import compressor_pb2 as pb


def _report(data: bytes, sha: str = None) -> pb.CompressionReport:
    report = pb.CompressionReport(output_sha256=sha or hashlib.sha256(data).hexdigest())
    report.totals.model_bytes_out = len(data)
    return report


CHUNKS = [os.urandom(1 << 20) for _ in range(40)]  # more than the sink queues
DATA = b"".join(CHUNKS)


@pytest.mark.parametrize("to_file", [False, True])
def test_verified_bytes_are_committed(tmp_path, to_file):
    path = tmp_path / "model.safetensors" if to_file else None
    sink = ModelSink(path)
    for chunk in CHUNKS:
        sink.write(chunk)
    sink.verify(_report(DATA))
    model = sink.commit()
    assert (path.read_bytes() if to_file else model) == DATA
    if to_file:
        assert os.listdir(tmp_path) == ["model.safetensors"]


def test_a_wrong_hash_leaves_no_file(tmp_path):
    path = tmp_path / "model.safetensors"
    sink = ModelSink(path)
    for chunk in CHUNKS:
        sink.write(chunk)
    with pytest.raises(IntegrityError, match="SHA-256"):
        sink.verify(_report(DATA, sha="0" * 64))
    sink.discard()
    assert os.listdir(tmp_path) == []


def test_a_short_stream_is_refused(tmp_path):
    sink = ModelSink(None)
    for chunk in CHUNKS[:-1]:
        sink.write(chunk)
    with pytest.raises(IntegrityError):
        sink.verify(_report(DATA))
    sink.discard()
