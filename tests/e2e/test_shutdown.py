"""SIGTERM: health turns NOT_SERVING, new jobs are refused with UNAVAILABLE,
running jobs finish within the grace period (or end with UNAVAILABLE after
it), and the server exits 0."""
from __future__ import annotations

import collections
import re
import signal
import subprocess
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
from held_job import HOLD_TIMEOUT, HeldJob

SERVING, NOT_SERVING = b"\x08\x01", b"\x08\x02"  # grpc.health.v1.HealthCheckResponse


def _health(target: str) -> bytes:
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        return check(b"", timeout=5)


def _model() -> bytes:
    rng = np.random.default_rng(9)
    return safetensors_io.dumps({"w.weight": rng.standard_normal((256, 256), dtype=np.float32)})


def _wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_refuses_new_jobs_lets_admitted_ones_finish_and_exits_zero(start_server):
    srv = start_server(["--shutdown_grace_seconds=60"])
    model = _model()
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        expected = c.compress(model).model
        assert _health(srv.target) == SERVING
        held = HeldJob(c, model)
        assert held.admitted.wait(HOLD_TIMEOUT) and held.error is None
        srv.stopped_by_us = True
        srv.proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: _health(srv.target) == NOT_SERVING, "health NOT_SERVING")

        def refused():
            try:
                c.compress(model)
            except bonsai.BonsaiError as err:
                return err
            return None
        err = _wait_for(refused, "a new job to be refused")
        assert err.code == grpc.StatusCode.UNAVAILABLE, f"{err.code_name}: {err.message}"
        assert isinstance(err, bonsai.ServerUnavailable) and err.reason == "SHUTTING_DOWN", err
        assert held.finish() == expected
    assert srv.proc.wait(60) == 0


def test_sigterm_ends_jobs_still_running_after_the_grace_period_with_unavailable(start_server):
    srv = start_server(["--shutdown_grace_seconds=1"])
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        held = HeldJob(c, _model())
        assert held.admitted.wait(HOLD_TIMEOUT) and held.error is None
        srv.stopped_by_us = True
        srv.proc.send_signal(signal.SIGTERM)
        held.thread.join(HOLD_TIMEOUT)
        assert not held.thread.is_alive(), "the held job was never ended"
        assert held.error is not None and held.error.code() == grpc.StatusCode.UNAVAILABLE, held.error
        assert ("bonsai-error-reason", "SHUTTING_DOWN") in held.error.trailing_metadata(), held.error
        held.release.set()
    assert srv.proc.wait(60) == 0


# The server's own bound past the grace period (api/graceful_shutdown.h),
# enforced by a watchdog that exits with status 3: exit status 0 therefore
# means the server ended within grace + bound by itself.
SHUTDOWN_BOUND = 10
WATCHDOG_STATUS = 3
MiB = 1 << 20


def _metrics(srv) -> str:
    url = f"http://127.0.0.1:{srv.metrics_port}/metrics"
    return urllib.request.urlopen(url, timeout=10).read().decode()


def _admitted(srv, stage: str) -> float:
    match = re.search(r'^bonsai_jobs_admitted\{stage="' + stage + r'"\} ([0-9.e+-]+)$', _metrics(srv), re.M)
    return float(match.group(1)) if match else -1


class _RawCall:
    """A Compress call driven by a request generator, its responses read on
    a thread only when `read` is set (a client that stops reading never is)."""

    def __init__(self, target: str, requests, read: bool = True):
        self.channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 * MiB)])
        self.call = pb_grpc.CompressorStub(self.channel).Compress(requests, timeout=300)
        self.first_word = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._receive, daemon=True)
        if read:
            self.thread.start()

    def _receive(self):
        try:
            for _ in self.call:
                self.first_word.set()
        except grpc.RpcError as err:
            self.error = err
        finally:
            self.first_word.set()

    def drain(self, timeout: float = HOLD_TIMEOUT):
        """Reads what is left (for the client that stopped reading): the call
        must end, one way or another, once the server is gone."""
        if not self.thread.is_alive() and self.error is None:
            self.thread.start()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the call never ended"
        self.channel.close()


def _big_model() -> bytes:
    # Dense output the size of the input, far more than the transport's
    # windows and the sockets' buffers hold for a client that reads nothing.
    rng = np.random.default_rng(13)
    tensors = {f"layer{i}.weight": rng.standard_normal((512, 1024), dtype=np.float32) for i in range(24)}
    data = safetensors_io.dumps(tensors)
    assert len(data) >= 48 * MiB
    return data


@pytest.mark.timeout(240)
def test_sigterm_with_idle_stalled_and_non_reading_clients_exits_within_the_bound(start_server):
    grace = 2
    srv = start_server([f"--shutdown_grace_seconds={grace}", "--max_jobs_per_peer=0"])
    small, big = _model(), _big_model()
    release = threading.Event()

    def declare(model):
        return pb.CompressRequest(spec=pb.CompressionSpec(
            method="magnitude", sparsity=0.5,
            files=[pb.FileDeclaration(name="model.safetensors", size_bytes=len(model))]))

    def idle():  # the spec, then nothing
        yield declare(small)
        release.wait(HOLD_TIMEOUT)

    def stalled():  # half the model, then nothing
        yield declare(small)
        yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=small[: len(small) // 2]))
        release.wait(HOLD_TIMEOUT)

    def whole(model):
        yield declare(model)
        for start in range(0, len(model), MiB):
            yield pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=model[start:start + MiB]))

    calls = {}
    try:
        calls["idle"] = _RawCall(srv.target, idle())
        calls["stalled"] = _RawCall(srv.target, stalled())
        calls["not reading"] = _RawCall(srv.target, whole(big), read=False)
        for name in ("idle", "stalled"):
            assert calls[name].first_word.wait(HOLD_TIMEOUT) and calls[name].error is None, name
        # The non-reading client's job is done and its output is stuck on
        # the way out: it is the one job sending.
        _wait_for(lambda: _admitted(srv, "sending") == 1, "the unread output to be stuck", timeout=180)
        assert _admitted(srv, "receiving") == 2

        srv.stopped_by_us = True
        start = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        try:
            status = srv.proc.wait(grace + SHUTDOWN_BOUND + 30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {time.monotonic() - start:.0f} s after SIGTERM:\n{srv.log()}")
        elapsed = time.monotonic() - start
        assert status != WATCHDOG_STATUS, f"the watchdog had to end it after {elapsed:.1f} s:\n{srv.log()}"
        assert status == 0, f"exit status {status} after {elapsed:.1f} s:\n{srv.log()}"

        for name in ("idle", "stalled"):
            calls[name].drain()
            err = calls[name].error
            assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE, (name, err)
            assert "shutting down" in err.details(), (name, err.details())
        calls["not reading"].drain()
    finally:
        release.set()


def test_new_calls_during_a_short_grace_shutdown_get_unavailable_not_cancelled(start_server):
    """New jobs keep coming while the server drains a held job past a short
    grace period and stops: each is refused with UNAVAILABLE (which clients
    retry on another replica), before and after gRPC's own shutdown begins."""
    srv = start_server(["--shutdown_grace_seconds=1"])
    model = _model()
    outcomes = collections.Counter()
    stop = threading.Event()

    def new_jobs(fresh_channel: bool):
        with bonsai.Client(srv.target, timeout=30, retry=bonsai.NO_RETRY) as shared:
            while not stop.is_set():
                try:
                    if fresh_channel:
                        with bonsai.Client(srv.target, timeout=30, retry=bonsai.NO_RETRY) as c:
                            c.compress(model)
                    else:
                        shared.compress(model)
                    outcomes["OK"] += 1
                except bonsai.BonsaiError as err:
                    outcomes[(err.code_name, err.message)] += 1
                time.sleep(0.02)

    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        held = HeldJob(c, model)
        assert held.admitted.wait(HOLD_TIMEOUT) and held.error is None
        threads = [threading.Thread(target=new_jobs, args=(i % 2 == 0,), daemon=True) for i in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        srv.stopped_by_us = True
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
        time.sleep(0.5)  # calls started as it went find it gone
        stop.set()
        for thread in threads:
            thread.join(HOLD_TIMEOUT)
        held.thread.join(HOLD_TIMEOUT)
        held.release.set()
    refused = {k: v for k, v in outcomes.items() if k != "OK"}
    assert refused, f"no new job was refused: {outcomes}"
    codes = {code for code, _ in refused}
    assert codes == {"UNAVAILABLE"}, f"new jobs during shutdown: {outcomes}"
    # Those the server answered itself say why and what to do.
    answered = [message for _, message in refused if "shutting down" in message]
    assert answered, f"no refusal came from the server: {outcomes}"
    assert all("another replica" in message for message in answered), answered
