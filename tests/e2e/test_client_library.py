"""The Python client's own promises, against an in-process fake server that
injects the faults a real server cannot be made to show on demand."""
from __future__ import annotations

import os

import grpc
import pytest

import bonsai
from bonsai.v1 import compressor_pb2 as pb
from fake_server import start_fake

FAST_RETRY = bonsai.RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
def fake():
    server, servicer, target = start_fake()
    with bonsai.Client(target, timeout=30, retry=FAST_RETRY, chunk_bytes=64 << 10) as client:
        yield servicer, client
    server.stop(grace=None)


def test_refusal_at_admission_is_retried_without_uploading_the_model(fake):
    servicer, client = fake
    servicer.refusals_left = 2
    data = os.urandom(3 << 20)  # far more than gRPC's flow-control window
    result = client.compress(data)
    assert result.model == data[::-1]
    assert servicer.calls == 3
    assert servicer.model_bytes_seen == [0, 0, len(data)]


def test_unavailable_at_admission_is_retried(fake):
    servicer, client = fake
    servicer.refusals_left, servicer.refuse_code = 1, grpc.StatusCode.UNAVAILABLE
    assert client.compress(b"model").model == b"ledom"


def test_retries_give_up_after_max_attempts_with_the_servers_message(fake):
    servicer, client = fake
    servicer.refusals_left = 100
    with pytest.raises(bonsai.BonsaiError) as info:
        client.compress(b"model")
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in info.value.message
    assert servicer.calls == FAST_RETRY.max_attempts


def test_failure_after_the_upload_is_not_retried(fake):
    servicer, client = fake
    servicer.fail_after_upload = grpc.StatusCode.UNAVAILABLE
    with pytest.raises(bonsai.BonsaiError) as info:
        client.compress(b"x" * 1000)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert servicer.calls == 1


def test_upload_over_the_servers_limit_is_not_retried(fake):
    servicer, client = fake
    servicer.refusals_left, servicer.max_model_bytes = 100, 10
    with pytest.raises(bonsai.BonsaiError):
        client.compress(b"x" * 1000)
    assert servicer.calls == 1


def test_corrupted_output_raises_integrity_error_and_leaves_no_file(fake, tmp_path):
    servicer, client = fake
    servicer.corrupt_output = True
    out = tmp_path / "out.bin"
    with pytest.raises(bonsai.IntegrityError):
        client.compress(b"abcdef" * 1000, output_path=str(out))
    assert list(tmp_path.iterdir()) == []


def test_output_path_receives_the_model_and_result_model_is_none(fake, tmp_path):
    _, client = fake
    src, out = tmp_path / "in.bin", tmp_path / "out.bin"
    data = os.urandom(1 << 20)
    src.write_bytes(data)
    events, uploaded, downloaded = [], [], []
    result = client.compress(str(src), output_path=str(out), progress=events.append,
                             upload_progress=lambda n, t: uploaded.append((n, t)),
                             download_progress=lambda n, t: downloaded.append((n, t)))
    assert result.model is None and out.read_bytes() == data[::-1]
    assert result.report_dict["format"] == "fake" and result.bytes_in == len(data)
    assert uploaded[-1] == (len(data), len(data)) and downloaded[-1] == (len(data), len(data))
    assert pb.STAGE_COMPRESSING in [e.stage for e in events]


def test_file_objects_and_inspect_stream_their_bytes(fake, tmp_path):
    _, client = fake
    path = tmp_path / "m.bin"
    path.write_bytes(b"0123456789" * 10000)
    with open(path, "rb") as f:
        f.seek(10)
        assert client.compress(f).model == (b"0123456789" * 10000)[10:][::-1]
    with open(path, "rb") as f:
        assert client.inspect(f).total_bytes == 100000


def test_spec_carries_every_option(fake):
    spec = bonsai.client.specs.compression_spec(
        method="nm", sparsity=0.5, scope="global", include=["a"], exclude=["b"], include_only=True,
        overrides={"w": 0.25}, options={"n": 2, "m": 4, "norm": "l1", "structured_mode": "physical",
                                        "block_size": 64, "dampening": 0.05, "per_channel": True},
        rules=[{"regex": "conv", "method": "magnitude", "sparsity": 0.3, "scope": "layer", "name": "convs"}],
        output="packed", model_size_bytes=123, calibration_size_bytes=45)
    assert spec.scope == pb.SCOPE_GLOBAL and spec.output == pb.OUTPUT_MODE_PACKED
    assert spec.options.norm == pb.NORM_L1 and spec.options.structured_mode == pb.STRUCTURED_MODE_PHYSICAL
    assert spec.options.n == 2 and spec.options.m == 4 and spec.options.per_channel
    assert spec.rules[0].tensor_regex == "conv" and spec.rules[0].scope == pb.SCOPE_LAYER
    assert spec.sparsity_overrides["w"] == 0.25 and spec.model_size_bytes == 123
    with pytest.raises(TypeError):
        bonsai.client.specs.method_options({"bogus": 1})
