"""The client's receiving end: bytes are verified before any output file appears."""
from __future__ import annotations

import hashlib
import os

import pytest

from bonsai.errors import IntegrityError
from bonsai.results import FilesSink
from bonsai.v1 import compressor_pb2 as pb


def _report(files: dict, sha: dict = None) -> pb.CompressionReport:
    """A report listing `files` (name -> bytes) with their sizes and SHA-256 (or `sha[name]`)."""
    report = pb.CompressionReport()
    for name, data in files.items():
        digest = (sha or {}).get(name) or hashlib.sha256(data).hexdigest()
        report.files.add(name=name, role="model", bytes_in=len(data), bytes_out=len(data), sha256=digest)
    report.totals.model_bytes_out = sum(len(d) for d in files.values())
    return report


CHUNKS = [os.urandom(1 << 20) for _ in range(40)]  # more than the sink queues
DATA = b"".join(CHUNKS)
SMALL = {"config.json": b'{"a": 1}\n', "sub/tokenizer.json": b"{}" * 1000}
NAMES = ["model.safetensors", "config.json", "sub/tokenizer.json"]


def _send_all(sink: FilesSink, skip_last_chunk: bool = False) -> dict:
    chunks = CHUNKS[:-1] if skip_last_chunk else CHUNKS
    for chunk in chunks:
        sink.write(0, chunk)
    for index, name in enumerate(NAMES[1:], start=1):
        data = SMALL[name]
        for start in range(0, len(data), 700):
            sink.write(index, data[start:start + 700])
    return {"model.safetensors": DATA, **SMALL}


def _paths(folder) -> list:
    return [os.path.join(folder, *name.split("/")) for name in NAMES]


def _all_files(folder) -> list:
    return sorted(os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
                  for root, _, names in os.walk(folder) for f in names)


def test_verified_bytes_are_committed_to_memory():
    sink = FilesSink(["model"], None)
    for chunk in CHUNKS:
        sink.write(0, chunk)
    sink.verify(_report({"model": DATA}))
    assert sink.commit() == {"model": DATA}


def test_verified_files_are_committed_under_their_names(tmp_path):
    sink = FilesSink(NAMES, _paths(tmp_path / "out"))
    expected = _send_all(sink)
    sink.verify(_report(expected))
    sink.commit()
    assert _all_files(tmp_path) == sorted("out/" + n for n in NAMES)  # no .part file left
    for name, data in expected.items():
        assert (tmp_path / "out" / name).read_bytes() == data


@pytest.mark.parametrize("bad", NAMES)
def test_a_wrong_hash_of_any_file_leaves_no_file_and_no_folder(tmp_path, bad):
    sink = FilesSink(NAMES, _paths(tmp_path / "out"))
    expected = _send_all(sink)
    with pytest.raises(IntegrityError, match="SHA-256"):
        sink.verify(_report(expected, sha={bad: "0" * 64}))
    sink.discard()
    assert os.listdir(tmp_path) == []


def test_a_short_stream_is_refused(tmp_path):
    sink = FilesSink(NAMES, _paths(tmp_path))
    expected = _send_all(sink, skip_last_chunk=True)
    with pytest.raises(IntegrityError, match="model.safetensors"):
        sink.verify(_report(expected))
    sink.discard()
    assert os.listdir(tmp_path) == []


def test_a_report_missing_a_file_is_refused(tmp_path):
    sink = FilesSink(NAMES, _paths(tmp_path))
    expected = _send_all(sink)
    del expected["config.json"]
    with pytest.raises(IntegrityError):
        sink.verify(_report(expected))
    sink.discard()
    assert os.listdir(tmp_path) == []


def test_bytes_for_a_file_index_out_of_range_are_refused():
    sink = FilesSink(["model"], None)
    with pytest.raises(IntegrityError, match="file 3"):
        sink.write(3, b"xx")
    sink.discard()
