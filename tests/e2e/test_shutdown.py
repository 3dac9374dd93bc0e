"""SIGTERM: health turns NOT_SERVING, new jobs are refused with UNAVAILABLE,
running jobs finish within the grace period (or end with UNAVAILABLE after
it), and the server exits 0."""
from __future__ import annotations

import signal
import time

import grpc
import numpy as np

import bonsai
from bonsai import safetensors_io
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
        held.release.set()
    assert srv.proc.wait(60) == 0
