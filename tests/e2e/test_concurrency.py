"""More jobs than workers + queue: each one succeeds with its own correct
output or is refused with RESOURCE_EXHAUSTED; none is lost or mixed up."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from held_job import HOLD_TIMEOUT, HeldJob


def _variant(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return safetensors_io.dumps({f"l{i}.weight": rng.standard_normal((512, 512), dtype=np.float32)
                                 for i in range(4)})


@pytest.mark.parametrize("workers,queued", [(1, 1), (1, 0), (2, 1)])
def test_job_beyond_workers_plus_queue_is_refused_and_admitted_jobs_finish(start_server, workers, queued):
    # One client fills every slot here, which --max_jobs_per_peer exists to
    # prevent (test_job_limits.py): it is off, to test the slots themselves.
    srv = start_server([f"--max_queued_jobs={queued}", "--max_jobs_per_peer=0"], workers=workers)
    models = [_variant(seed) for seed in range(workers + queued + 1)]
    with bonsai.Client(srv.target, timeout=120, retry=bonsai.NO_RETRY) as c:
        expected = [c.compress(m).model for m in models]
        held = [HeldJob(c, m) for m in models[:workers + queued]]
        for job in held:
            assert job.admitted.wait(HOLD_TIMEOUT), "held job was never admitted"
            assert job.error is None, f"a job within the limits was refused: {job.error}"
        with pytest.raises(bonsai.BonsaiError) as info:
            c.compress(models[-1])
        assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        for job, want in zip(held, expected):
            assert job.finish() == want
        assert c.compress(models[-1]).model == expected[-1]  # the slots are free again


@pytest.mark.timeout(600)
def test_many_concurrent_jobs_each_succeed_correctly_or_are_resource_exhausted(start_server):
    srv = start_server(["--max_queued_jobs=1"], workers=2)
    models = [_variant(100 + i) for i in range(4)]
    with bonsai.Client(srv.target, timeout=300, retry=bonsai.NO_RETRY) as c:
        expected = [c.compress(m).model for m in models]
        jobs = [i % len(models) for i in range(12)]

        def run(i):
            try:
                return i, c.compress(models[i]).model, None
            except bonsai.BonsaiError as err:
                return i, None, err

        with ThreadPoolExecutor(len(jobs)) as pool:
            outcomes = list(pool.map(run, jobs, timeout=300))
    assert len(outcomes) == len(jobs)
    succeeded = 0
    for i, model, err in outcomes:
        if err is None:
            assert model == expected[i], "a job got another job's output"
            succeeded += 1
        else:
            assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"{err.code_name}: {err.message}"
    assert succeeded >= 1


@pytest.mark.timeout(600)
def test_retrying_client_gets_every_job_done_on_a_busy_server(start_server):
    srv = start_server(["--max_queued_jobs=0"], workers=1)
    models = [_variant(200 + i) for i in range(3)]
    retry = bonsai.RetryPolicy(max_attempts=50, initial_backoff=0.05, max_backoff=1.0)
    with bonsai.Client(srv.target, timeout=300, retry=retry) as c:
        expected = [c.compress(m).model for m in models]
        with ThreadPoolExecutor(6) as pool:
            outputs = list(pool.map(lambda i: c.compress(models[i % 3]).model, range(6), timeout=300))
    assert outputs == [expected[i % 3] for i in range(6)]
