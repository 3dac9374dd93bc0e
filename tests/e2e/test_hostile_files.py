"""File declarations and chunks a hostile or broken client may send: names
that climb out of the model folder, duplicates, chunks for files that were
never declared, more or fewer bytes than declared. Each is INVALID_ARGUMENT
with a message that says what is wrong, and the server goes on serving."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb
from expect import assert_compress_works, expect_error
from test_bad_inputs import raw_compress

INVALID = grpc.StatusCode.INVALID_ARGUMENT
CONFIG = b'{"architectures": ["Tiny"]}\n'


def declare(*files):
    """A magnitude spec declaring (name, size) pairs."""
    return pb.CompressRequest(spec=pb.CompressionSpec(
        method="magnitude", sparsity=0.5, files=[pb.FileDeclaration(name=n, size_bytes=s) for n, s in files]))


def chunk(file: int, data: bytes):
    return pb.CompressRequest(file_chunk=pb.FileChunk(file=file, data=data))


def raw_inspect(c: bonsai.Client, requests):
    try:
        return c.stub.Inspect(iter(requests), timeout=60)
    except grpc.RpcError as err:
        raise bonsai.BonsaiError(err.code(), err.details() or "") from None


UNSAFE_NAMES = {
    "parent": "../model.safetensors",
    "parent_in_the_middle": "sub/../../model.safetensors",
    "ends_in_parent": "sub/..",
    "absolute": "/etc/model.safetensors",
    "absolute_root": "/",
    "dot_segment": "./model.safetensors",
    "empty_segment": "sub//model.safetensors",
    "trailing_slash": "sub/",
    "backslash": "..\\model.safetensors",
    "empty": "",
    "nul_byte": "model\0.safetensors",
}


@pytest.mark.parametrize("case", sorted(UNSAFE_NAMES))
def test_a_name_outside_the_model_folder_is_invalid_argument(strict_client, mlp_safetensors, case):
    name = UNSAFE_NAMES[case]
    requests = [declare(("config.json", len(CONFIG)), (name, len(mlp_safetensors))),
                chunk(0, CONFIG), chunk(1, mlp_safetensors)]
    err = expect_error(INVALID, lambda: raw_compress(strict_client, requests), "relative path")
    if name and "\0" not in name:
        assert f'"{name}"' in err.message, err.message  # the message quotes the name
    assert_compress_works(strict_client, mlp_safetensors)


@pytest.mark.parametrize("case", ["parent", "absolute"])
def test_inspect_refuses_the_same_names(strict_client, mlp_safetensors, case):
    name = UNSAFE_NAMES[case]
    requests = [pb.InspectRequest(spec=pb.InspectSpec(files=[pb.FileDeclaration(name=name,
                                                                                 size_bytes=len(mlp_safetensors))])),
                pb.InspectRequest(file_chunk=pb.FileChunk(file=0, data=mlp_safetensors))]
    expect_error(INVALID, lambda: raw_inspect(strict_client, requests), "relative path", name)
    assert strict_client.inspect(mlp_safetensors).total_params > 0


def test_a_name_declared_twice_is_invalid_argument(strict_client, mlp_safetensors):
    n = len(mlp_safetensors)
    requests = [declare(("model.safetensors", n), ("model.safetensors", n)),
                chunk(0, mlp_safetensors), chunk(1, mlp_safetensors)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "model.safetensors", "twice")
    assert_compress_works(strict_client, mlp_safetensors)


@pytest.mark.parametrize("index", [2, 7, 2 ** 32 - 1])
def test_a_chunk_for_a_file_index_out_of_range_is_invalid_argument(strict_client, mlp_safetensors, index):
    requests = [declare(("config.json", len(CONFIG)), ("model.safetensors", len(mlp_safetensors))),
                chunk(0, CONFIG), chunk(index, mlp_safetensors)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), f"file {index}", "2 file")
    assert_compress_works(strict_client, mlp_safetensors)


def test_more_bytes_than_declared_for_one_file_is_invalid_argument(strict_client, mlp_safetensors):
    """The model file is exact; the config gets one byte too many, in a later chunk."""
    requests = [declare(("config.json", len(CONFIG)), ("model.safetensors", len(mlp_safetensors))),
                chunk(1, mlp_safetensors), chunk(0, CONFIG), chunk(0, b"!")]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "config.json", str(len(CONFIG)),
                 "declared")
    assert_compress_works(strict_client, mlp_safetensors)


def test_a_stray_byte_after_the_output_has_come_still_fails_the_job(strict_client, mlp_safetensors):
    """A job may finish as soon as the bytes it reads are in; the upload is
    still not what it declared until the client half-closes. The stray byte
    here is sent once the report has come, or after a few seconds without it
    (the right answer: no report before the half-close); a server that ended
    the call with its report first would answer OK."""
    import threading
    output_seen, report_seen = threading.Event(), threading.Event()

    def requests():
        yield declare(("config.json", len(CONFIG)), ("model.safetensors", len(mlp_safetensors)))
        yield chunk(1, mlp_safetensors)
        yield chunk(0, CONFIG)
        report_seen.wait(3)
        yield chunk(0, b"!")

    def call():
        try:
            for response in strict_client.stub.Compress(requests(), timeout=60):
                kind = response.WhichOneof("payload")
                if kind == "file_chunk":
                    output_seen.set()
                if kind == "report":
                    report_seen.set()
        except grpc.RpcError as err:
            raise bonsai.BonsaiError(err.code(), err.details() or "") from None
        raise AssertionError("the server accepted a malformed stream")

    expect_error(INVALID, call, "config.json", "declared")
    assert output_seen.is_set(), "the output never came before the stray byte"
    assert_compress_works(strict_client, mlp_safetensors)


def test_a_file_shorter_than_declared_at_half_close_is_invalid_argument(strict_client, mlp_safetensors):
    requests = [declare(("config.json", len(CONFIG) + 10), ("model.safetensors", len(mlp_safetensors))),
                chunk(1, mlp_safetensors), chunk(0, CONFIG)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "config.json", "cut short",
                 f"{len(CONFIG)} of the {len(CONFIG) + 10}")
    assert_compress_works(strict_client, mlp_safetensors)


def test_a_declared_file_with_no_bytes_at_all_is_invalid_argument(strict_client, mlp_safetensors):
    requests = [declare(("config.json", len(CONFIG)), ("model.safetensors", len(mlp_safetensors))),
                chunk(1, mlp_safetensors)]
    expect_error(INVALID, lambda: raw_compress(strict_client, requests), "config.json", "0 of")
    assert_compress_works(strict_client, mlp_safetensors)


def test_header_only_is_for_inspect_not_compress(strict_client, mlp_safetensors):
    spec = declare(("model.safetensors", len(mlp_safetensors)))
    spec.spec.files[0].header_only = True
    expect_error(INVALID, lambda: raw_compress(strict_client, [spec, chunk(0, mlp_safetensors[:100])]),
                 "header_only", "model.safetensors")
    assert_compress_works(strict_client, mlp_safetensors)


def test_more_files_than_max_files_is_invalid_argument(start_server, mlp_safetensors):
    srv = start_server(["--max_files=3"])
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        assert c.capabilities().limits.max_files == 3
        files = [(f"extra{i}.json", 2) for i in range(3)] + [("model.safetensors", len(mlp_safetensors))]
        requests = [declare(*files)] + [chunk(i, b"{}") for i in range(3)] + [chunk(3, mlp_safetensors)]
        expect_error(INVALID, lambda: raw_compress(c, requests), "4 files", "max_files")
        assert_compress_works(c, mlp_safetensors)


def test_interleaved_chunks_of_several_files_are_fine(strict_client, mlp_safetensors):
    """The protocol lets a client interleave files; the output comes back file after file, report last."""
    second = safetensors_io.dumps({"other.weight": np.arange(1, 65, dtype=np.float32).reshape(8, 8)})
    files = [("a.safetensors", len(mlp_safetensors)), ("b.safetensors", len(second)), ("notes.txt", 5)]
    requests = [declare(*files)]
    for start in range(0, max(len(mlp_safetensors), len(second)), 1000):
        if start < len(mlp_safetensors):
            requests.append(chunk(0, mlp_safetensors[start:start + 1000]))
        if start < len(second):
            requests.append(chunk(1, second[start:start + 1000]))
        if start == 0:
            requests.append(chunk(2, b"hello"))
    responses = list(strict_client.stub.Compress(iter(requests), timeout=60))
    kinds = [r.WhichOneof("payload") for r in responses]
    assert kinds[-1] == "report" and kinds.count("report") == 1
    order = [r.file_chunk.file for r in responses if r.WhichOneof("payload") == "file_chunk"]
    assert order == sorted(order), f"files interleaved on the way out: {order}"
    out = {}
    for r in responses:
        if r.WhichOneof("payload") == "file_chunk":
            out[r.file_chunk.file] = out.get(r.file_chunk.file, b"") + r.file_chunk.data
    assert out[2] == b"hello"
    assert int((safetensors_io.loads(out[1])["other.weight"] == 0).sum()) == 32
    report = responses[-1].report
    assert [f.name for f in report.files] == [n for n, _ in files]


def _huge_model_header(gib: int) -> tuple:
    """The 8-byte length and JSON header of a safetensors file holding one
    F32 tensor of `gib` GiB, and the size the whole file would have."""
    import json
    import struct
    rows = gib * (1 << 28) // 65536
    header = json.dumps({"w": {"dtype": "F32", "shape": [rows, 65536],
                               "data_offsets": [0, rows * 65536 * 4]}}).encode()
    head = struct.pack("<Q", len(header)) + header
    return head, len(head) + rows * 65536 * 4


def _header_only_inspect(head: bytes, declared: int, data: bytes):
    spec = pb.InspectRequest(spec=pb.InspectSpec(files=[pb.FileDeclaration(
        name="model.safetensors", size_bytes=declared, header_only=True)]))
    chunks = [pb.InspectRequest(file_chunk=pb.FileChunk(file=0, data=data[i:i + (1 << 20)]))
              for i in range(0, len(data), 1 << 20)]
    return [spec] + chunks


def test_a_header_only_inspect_is_budgeted_by_its_header_not_the_declared_size(start_server):
    """Inspect of a 16 GiB checkpoint sends its header only; the spool and
    model limits count what is sent, so a server with 1 GiB of spool and a
    1 GiB model limit still inspects it (it once reserved 3 x 16 GiB)."""
    srv = start_server([f"--max_spool_bytes={1 << 30}", f"--max_model_bytes={1 << 30}",
                        "--memory_spool_bytes=0"])
    head, declared = _huge_model_header(16)
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        info = raw_inspect(c, _header_only_inspect(head, declared, head))
        assert [(t.name, list(t.shape)) for t in info.tensors] == [("w", [65536, 65536])]


def test_a_header_only_file_that_sends_more_than_a_header_is_invalid_argument(strict_client):
    """Room is reserved for a header (at most 8 bytes + 100 MiB): a client
    that declares header_only and then streams the weights is stopped there."""
    head, declared = _huge_model_header(1)
    too_much = head + bytes(8 + (100 << 20) + 1 - len(head))
    expect_error(INVALID, lambda: raw_inspect(strict_client, _header_only_inspect(head, declared, too_much)),
                 "header_only", "model.safetensors")
