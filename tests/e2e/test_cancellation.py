"""Clients that vanish mid-upload or cancel mid-job leave a healthy server
whose memory returns to where it was."""
from __future__ import annotations

import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc
from expect import assert_compress_works

MiB = 1 << 20
UPLOAD_BYTES = 48 * MiB
RSS_MARGIN = 40 * MiB
SETTLE_SECONDS = 30


@pytest.fixture(scope="module")
def model_48mib():
    rng = np.random.default_rng(5)
    tensors = {f"layer{i}.weight": rng.standard_normal((768, 1024), dtype=np.float32) for i in range(16)}
    data = safetensors_io.dumps(tensors)
    assert len(data) >= 48 * MiB
    return data


def _rss_settles_near(server, baseline: int) -> int:
    """Polls (bounded) until RSS is within the margin of `baseline`; returns the last value."""
    deadline = time.monotonic() + SETTLE_SECONDS
    rss = server.rss_bytes()
    while rss > baseline + RSS_MARGIN and time.monotonic() < deadline:
        time.sleep(0.5)
        rss = server.rss_bytes()
    return rss


def _baseline_after_warmup(server, client, model):
    # One full job first, so allocator pools and gRPC buffers are as warm as
    # they will be; what remains after that is what a leak would add to.
    client.compress(model, method="magnitude", sparsity=0.5)
    return _rss_settles_near(server, server.rss_bytes())


def _declare(name: str, data: bytes) -> pb.FileDeclaration:
    return pb.FileDeclaration(name=name, size_bytes=len(data))


def _disconnect_mid_upload(target: str, model: bytes, after_chunks: int) -> None:
    """A raw client that sends the spec and `after_chunks` MiB, then drops its
    connection (no cancel, no half-close), as a crashed client would."""
    half_sent = threading.Event()

    def requests():
        yield pb.CompressRequest(spec=pb.CompressionSpec(method="magnitude", sparsity=0.5,
                                                         files=[_declare("model.safetensors", model)]))
        for i, start in enumerate(range(0, len(model), MiB)):
            if i == after_chunks:
                half_sent.set()
            yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=model[start:start + MiB]))

    channel = grpc.insecure_channel(target)
    call = pb_grpc.CompressorStub(channel).Compress(requests(), timeout=120)
    assert half_sent.wait(60), "the upload never got going"
    channel.close()  # the client is gone: its connection closes mid-upload
    with pytest.raises(grpc.RpcError):
        for _ in call:
            pass


@pytest.mark.timeout(600)
def test_client_disconnecting_mid_upload_leaves_server_healthy_and_memory_released(server, client, model_48mib,
                                                                                   mlp_safetensors):
    baseline = _baseline_after_warmup(server, client, model_48mib)
    for _ in range(3):
        _disconnect_mid_upload(server.target, model_48mib, after_chunks=24)
    rss = _rss_settles_near(server, baseline)
    assert rss <= baseline + RSS_MARGIN, f"RSS {rss / MiB:.0f} MiB stayed above {baseline / MiB:.0f} MiB + margin"
    assert_compress_works(client, mlp_safetensors)


class _Stop(Exception):
    pass


@pytest.mark.timeout(600)
def test_client_cancelling_mid_job_leaves_server_healthy_and_memory_released(server, client, model_48mib,
                                                                             mlp_safetensors):
    baseline = _baseline_after_warmup(server, client, model_48mib)
    seen = []

    def cancel_once_the_job_runs(event):
        # A quarter into compressing: the job is on a worker, well before its end.
        seen.append(event.stage)
        if event.stage == pb.STAGE_COMPRESSING and event.fraction >= 0.25:
            raise _Stop()

    for _ in range(3):
        with pytest.raises(_Stop):  # the library cancels the call when the callback raises
            client.compress(model_48mib, method="magnitude", sparsity=0.5, scope="global",
                            progress=cancel_once_the_job_runs)
    assert pb.STAGE_COMPRESSING in seen
    rss = _rss_settles_near(server, baseline)
    assert rss <= baseline + RSS_MARGIN, f"RSS {rss / MiB:.0f} MiB stayed above {baseline / MiB:.0f} MiB + margin"
    assert_compress_works(client, mlp_safetensors)


def test_deadline_exceeded_mid_upload_leaves_server_healthy(server, mlp_safetensors):
    """A client whose deadline passes while it is still uploading."""
    stalled = threading.Event()

    def requests():
        yield pb.CompressRequest(spec=pb.CompressionSpec(method="magnitude", sparsity=0.5,
                                                         files=[_declare("mlp.safetensors", mlp_safetensors)]))
        yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=mlp_safetensors[:100]))
        stalled.wait(10)  # never set: the deadline passes while we wait

    with grpc.insecure_channel(server.target) as channel:
        call = pb_grpc.CompressorStub(channel).Compress(requests(), timeout=1.0)
        with pytest.raises(grpc.RpcError) as info:
            for _ in call:
                pass
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with bonsai.Client(server.target, timeout=60) as c:
        assert_compress_works(c, mlp_safetensors)


def _jobs_by_outcome(server) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        match = re.match(r'bonsai_jobs_total\{.*outcome="([^"]+)".*\} ([0-9.e+]+)$', line)
        if match:
            counts[match.group(1)] = counts.get(match.group(1), 0) + float(match.group(2))
    return counts


def test_client_disconnecting_mid_upload_is_counted_as_cancelled_not_invalid(start_server, model_48mib):
    """A vanished client did not send a bad request: dashboards must not call it one."""
    srv = start_server()
    before = _jobs_by_outcome(srv)
    for _ in range(3):
        _disconnect_mid_upload(srv.target, model_48mib, after_chunks=8)
    deadline = time.monotonic() + SETTLE_SECONDS
    after = _jobs_by_outcome(srv)
    while sum(after.values()) - sum(before.values()) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        after = _jobs_by_outcome(srv)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert delta.get("cancelled", 0) == 3, f"jobs by outcome after 3 disconnects: {delta}"
    assert delta.get("invalid", 0) == 0, f"jobs by outcome after 3 disconnects: {delta}"
