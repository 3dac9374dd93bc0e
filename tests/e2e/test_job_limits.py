"""Fairness and the server's own job limits: --max_jobs_per_peer keeps one
client from taking every job slot (two peers on loopback: 127.0.0.1 directly,
127.0.0.2 through a relay bound to it), bonsai_jobs_admitted shows the slots
idle streams hold, and --max_job_seconds ends a job that trickles its upload
just fast enough to dodge the receive-idle timeout, giving back its slot and
its spool room."""
from __future__ import annotations

import re
import threading
import urllib.request

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc
from held_job import HOLD_TIMEOUT, HeldJob
from source_address_relay import SourceAddressRelay

WORKERS, QUEUED = 2, 2  # 4 job slots; the default per-peer cap is 4 - 1 = 3


def _model(seed: int = 3, rows: int = 256) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_io.dumps({"w.weight": rng.standard_normal((rows, 256), dtype=np.float32)})


def _metrics(srv) -> str:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=10).read().decode()


def _sample(text: str, series: str) -> float:
    match = re.search(r"^" + re.escape(series) + r" ([0-9.e+-]+)$", text, re.M)
    assert match, f"{series} is not in the exposition"
    return float(match.group(1))


def _hold_until_refused(client: bonsai.Client, model: bytes, limit: int) -> tuple:
    """Opens idle spec-only streams until one is refused (or `limit` are held)."""
    held = []
    while len(held) < limit:
        job = HeldJob(client, model)
        assert job.admitted.wait(HOLD_TIMEOUT), "no answer to a spec"
        if job.error is not None:
            return held, job.error
        held.append(job)
    return held, None


def _end(jobs) -> None:
    for job in jobs:
        job.call.cancel()
        job.release.set()
        job.thread.join(HOLD_TIMEOUT)


def test_idle_streams_from_one_peer_cannot_lock_out_another_client(start_server):
    srv = start_server([f"--max_queued_jobs={QUEUED}"], workers=WORKERS)
    model = _model()
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as greedy, \
            SourceAddressRelay(srv.port, "127.0.0.2") as relay, \
            bonsai.Client(relay.target, timeout=60, retry=bonsai.NO_RETRY) as other:
        expected = greedy.compress(model).model
        held, refusal = _hold_until_refused(greedy, model, WORKERS + QUEUED + 1)
        try:
            assert refusal is not None, f"one peer held all {len(held)} slots"
            assert len(held) == WORKERS + QUEUED - 1, len(held)
            assert refusal.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refusal
            assert "--max_jobs_per_peer" in refusal.details(), refusal.details()

            # The gauges see the slots the idle streams hold.
            text = _metrics(srv)
            assert _sample(text, 'bonsai_jobs_admitted{stage="receiving"}') == len(held)
            assert _sample(text, "bonsai_job_slots") == WORKERS + QUEUED
            assert _sample(text, 'bonsai_rejected_total{reason="peer_limit"}') >= 1

            # Another address still gets a slot, and a correct answer.
            assert other.compress(model).model == expected
        finally:
            _end(held)


def test_without_the_per_peer_cap_one_peer_takes_every_slot(start_server):
    """The control: with --max_jobs_per_peer=0 the same streams lock the
    other client out, so the test above proves the cap."""
    srv = start_server([f"--max_queued_jobs={QUEUED}", "--max_jobs_per_peer=0"], workers=WORKERS)
    model = _model()
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as greedy, \
            SourceAddressRelay(srv.port, "127.0.0.2") as relay, \
            bonsai.Client(relay.target, timeout=60, retry=bonsai.NO_RETRY) as other:
        held, refusal = _hold_until_refused(greedy, model, WORKERS + QUEUED)
        try:
            assert refusal is None and len(held) == WORKERS + QUEUED
            with pytest.raises(bonsai.BonsaiError) as info:
                other.compress(model)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "job slots" in info.value.message
        finally:
            _end(held)


def test_the_per_peer_cap_is_counted_per_address_not_per_connection(start_server):
    srv = start_server([f"--max_queued_jobs={QUEUED}", "--max_jobs_per_peer=1"], workers=WORKERS)
    model = _model()
    # Two channels (two connections) from one address share one cap.
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as first, \
            bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as second:
        held = HeldJob(first, model)
        try:
            assert held.admitted.wait(HOLD_TIMEOUT) and held.error is None
            with pytest.raises(bonsai.BonsaiError) as info:
                second.compress(model)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max_jobs_per_peer" in info.value.message
            # Its place comes back when its job ends.
            assert len(held.finish()) > 0
            assert second.compress(model).model
        finally:
            _end([held])


def _trickle(target: str, model: bytes, chunk: int, every: float, stop: threading.Event):
    """A Compress call that sends `chunk` bytes every `every` seconds: never
    idle, never done. Returns (responses, error) once the call ends."""
    outcome = {"responses": [], "error": None}
    admitted = threading.Event()

    def requests():
        yield pb.CompressRequest(spec=pb.CompressionSpec(
            method="magnitude", sparsity=0.5,
            files=[pb.FileDeclaration(name="model.safetensors", size_bytes=len(model))]))
        for start in range(0, len(model), chunk):
            if stop.wait(every):
                return
            yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=model[start:start + chunk]))

    channel = grpc.insecure_channel(target)
    call = pb_grpc.CompressorStub(channel).Compress(requests(), timeout=300)

    def receive():
        try:
            for response in call:
                outcome["responses"].append(response)
                admitted.set()
        except grpc.RpcError as err:
            outcome["error"] = err
        finally:
            admitted.set()
            channel.close()
    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    return outcome, admitted, thread


@pytest.mark.timeout(120)
def test_max_job_seconds_ends_a_trickling_upload_and_frees_its_slot_and_spool(start_server):
    model = _model(rows=512)  # 512 KiB: 512 chunks of 1 KiB, one every 0.1 s, is about a minute
    # One slot, and spool room for one job only (3 x 512 KiB, not 6).
    srv = start_server(["--max_queued_jobs=0", "--max_job_seconds=4",
                        f"--max_spool_bytes={4 * len(model)}", "--receive_idle_timeout_seconds=60"],
                       workers=1)
    stop = threading.Event()
    outcome, admitted, thread = _trickle(srv.target, model, 1024, 0.1, stop)
    try:
        assert admitted.wait(HOLD_TIMEOUT) and outcome["error"] is None, outcome["error"]
        with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as client:
            # While it trickles, it holds the server's one slot and its spool room.
            with pytest.raises(bonsai.BonsaiError) as info:
                client.compress(model)
            assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED

            thread.join(HOLD_TIMEOUT)
            assert not thread.is_alive(), "the trickling job was never ended"
            err = outcome["error"]
            assert err is not None, "the trickling job completed instead of being capped"
            assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err
            assert "--max_job_seconds" in err.details(), err.details()

        # Its slot and its spool room come back (as its job thread sees the
        # cancellation, a moment after the status: hence the retries).
        with bonsai.Client(srv.target, timeout=60) as client:
            assert client.compress(model).model
    finally:
        stop.set()
        thread.join(HOLD_TIMEOUT)

