"""Uploads and outputs live in unlinked spool files that vanish with their
job, whatever its end, on disk or, when the job fits the memory spool, in
memfds; working memory and spool disk are budgets: a job waits for its share,
and one that can never fit is refused naming the flag."""
from __future__ import annotations

import os
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
from expect import assert_compress_works, expect_error
from held_job import HOLD_TIMEOUT, HeldJob
from test_bad_inputs import chunk_msg, raw_compress, spec_msg
from test_cancellation import _disconnect_mid_upload

MiB = 1 << 20
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
SETTLE_SECONDS = 10
# The disk spool is what these tests watch: no job goes to the memory spool.
DISK_ONLY = "--memory_spool_bytes=0"
MEMFD = "/memfd:bonsai"


def spool_fds(pid: int, spool_dir) -> list:
    """The process's open files inside `spool_dir` (unlinked: "... (deleted)"),
    or with spool_dir=MEMFD its memory spool files."""
    if spool_dir == MEMFD:
        return [t for t in _fd_targets(pid) if t.startswith(MEMFD)]
    folder = os.path.realpath(spool_dir)
    return [t for t in _fd_targets(pid) if t.startswith(folder + "/")]


def _fd_targets(pid: int) -> list:
    found = []
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except FileNotFoundError:
            continue  # closed meanwhile
        found.append(target)
    return found


def wait_until_no_spool_fds(srv, spool_dir) -> list:
    """Polls (bounded) until the server holds no spool file; returns what it still holds."""
    deadline = time.monotonic() + SETTLE_SECONDS
    held = spool_fds(srv.pid, spool_dir)
    while held and time.monotonic() < deadline:
        time.sleep(0.1)
        held = spool_fds(srv.pid, spool_dir)
    return held


@pytest.fixture
def spool(tmp_path):
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def model_48mib():
    rng = np.random.default_rng(21)
    return safetensors_io.dumps({f"layer{i}.weight": rng.standard_normal((768, 1024), dtype=np.float32)
                                 for i in range(16)})


# ---------------------------------------------------------------- nothing left in the spool

def test_a_running_job_holds_unlinked_spool_files_and_drops_them_when_done(start_server, spool, mlp_safetensors):
    """The control for the tests below: while a job runs, its files are open
    in the spool folder, yet the folder lists nothing."""
    srv = start_server([f"--spool_dir={spool}", DISK_ONLY])
    with bonsai.Client(srv.target, timeout=120) as c:
        held = HeldJob(c, mlp_safetensors)
        assert held.admitted.wait(HOLD_TIMEOUT)
        open_files = spool_fds(srv.pid, spool)
        assert open_files and all(f.endswith("(deleted)") for f in open_files), open_files
        assert os.listdir(spool) == []
        assert held.finish()
    assert wait_until_no_spool_fds(srv, spool) == []
    assert os.listdir(spool) == []


def _succeed(srv, c, model):
    c.compress(model, sparsity=0.5)


def _invalid_model(srv, c, model):
    expect_error(INVALID, lambda: c.compress(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}" + b"\0" * 64))


def _cut_short(srv, c, model):
    expect_error(INVALID, lambda: raw_compress(c, [spec_msg(len(model) + 1000), chunk_msg(model[:MiB])]),
                 "cut short")


def _refused_mid_upload(srv, c, model):
    expect_error(INVALID, lambda: raw_compress(c, [spec_msg(100), chunk_msg(model[:MiB])]), "declared")


class _Stop(Exception):
    pass


def _cancelled_mid_job(srv, c, model):
    def cancel(event):
        if event.stage == pb.STAGE_COMPRESSING and event.fraction >= 0.25:
            raise _Stop()
    with pytest.raises(_Stop):
        c.compress(model, sparsity=0.5, scope="global", progress=cancel)


def _client_vanished_mid_upload(srv, c, model):
    _disconnect_mid_upload(srv.target, model, after_chunks=16)


ENDINGS = {"success": _succeed, "invalid_model": _invalid_model, "cut_short": _cut_short,
           "refused_mid_upload": _refused_mid_upload, "cancelled_mid_job": _cancelled_mid_job,
           "client_vanished_mid_upload": _client_vanished_mid_upload}


def test_a_job_that_fits_the_memory_spool_keeps_its_files_in_memfds(start_server, spool, mlp_safetensors):
    """The memory spool is used when the job fits it (3x the model), the disk
    spool otherwise; both give the same bytes."""
    srv = start_server([f"--spool_dir={spool}", f"--memory_spool_bytes={MiB}"])
    small = mlp_safetensors  # ~40 KB: fits 1 MiB three times over
    big = safetensors_io.dumps({"w.weight": np.ones((256, 512), np.float32)})  # 512 KiB: 1.5 MiB does not
    with bonsai.Client(srv.target, timeout=120) as c:
        assert c.capabilities().limits.memory_spool_bytes == MiB
        for model, held_in, not_in in ((small, MEMFD, spool), (big, spool, MEMFD)):
            held = HeldJob(c, model)
            assert held.admitted.wait(HOLD_TIMEOUT)
            assert spool_fds(srv.pid, held_in), f"no spool file in {held_in}"
            assert spool_fds(srv.pid, not_in) == []
            assert held.finish()
        assert wait_until_no_spool_fds(srv, MEMFD) == []
        disk = start_server([f"--spool_dir={spool}", DISK_ONLY])
        with bonsai.Client(disk.target, timeout=120) as d:
            for model in (small, big):
                assert c.compress(model, sparsity=0.5).model == d.compress(model, sparsity=0.5).model


@pytest.mark.timeout(300)
@pytest.mark.parametrize("place", ["disk", "memory"])
@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_a_job_leaves_nothing_in_the_spool_however_it_ends(start_server, spool, model_48mib, mlp_safetensors,
                                                          ending, place):
    where = MEMFD if place == "memory" else spool
    srv = start_server([f"--spool_dir={spool}",
                        f"--memory_spool_bytes={256 * MiB}" if place == "memory" else DISK_ONLY])
    with bonsai.Client(srv.target, timeout=120, retry=bonsai.NO_RETRY) as c:
        ENDINGS[ending](srv, c, model_48mib)
        held = wait_until_no_spool_fds(srv, where)
        assert held == [], f"{len(held)} spool file(s) still open {SETTLE_SECONDS}s after the job ended: {held}"
        assert os.listdir(spool) == []
        assert_compress_works(c, mlp_safetensors)
    assert wait_until_no_spool_fds(srv, where) == []


# ---------------------------------------------------------------- working memory

def test_max_memory_bytes_too_small_for_any_job_is_resource_exhausted(start_server, mlp_safetensors):
    srv = start_server([f"--max_memory_bytes={16 * MiB}"])
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        expect_error(EXHAUSTED, lambda: c.compress(mlp_safetensors), "max_memory_bytes")
        assert c.capabilities().limits.max_memory_bytes == 16 * MiB


def _write_64mib_model(path, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4096, 4096), dtype=np.float32)  # one 64 MiB tensor
    safetensors_io.write(path, {"w.weight": w})
    return w


def _check_pruned(path, w: np.ndarray, sparsity: float) -> None:
    out = safetensors_io.load(path)["w.weight"]
    keep = out != 0
    assert int((~keep).sum()) == round(sparsity * w.size)
    np.testing.assert_array_equal(out[keep], w[keep])
    assert np.abs(w[~keep]).max() <= np.abs(w[keep]).min()


@pytest.mark.timeout(600)
def test_jobs_wait_for_working_memory_and_none_is_lost(start_server, tmp_path):
    """Memory for one 64 MiB-tensor job (its estimate is about 300 MiB), two
    workers, four clients at once: each job runs when the memory is free."""
    srv = start_server([f"--max_memory_bytes={400 * MiB}"], workers=2)
    weights = {}
    for i in range(4):
        weights[i] = _write_64mib_model(tmp_path / f"in{i}.safetensors", seed=40 + i)
    outcomes, waited = {}, []

    def run(i):
        def progress(event):
            if "memory" in event.detail:
                waited.append(i)
        try:
            with bonsai.Client(srv.target, timeout=300) as c:
                outcomes[i] = c.compress(str(tmp_path / f"in{i}.safetensors"), sparsity=0.5,
                                         output_path=str(tmp_path / f"out{i}.safetensors"), progress=progress)
        except bonsai.BonsaiError as err:
            outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(500)
    assert sorted(outcomes) == [0, 1, 2, 3], "a job was lost"
    succeeded = 0
    for i, outcome in outcomes.items():
        if isinstance(outcome, bonsai.BonsaiError):
            assert outcome.code == EXHAUSTED, f"job {i}: {outcome.code_name}: {outcome.message}"
            assert not (tmp_path / f"out{i}.safetensors").exists()
            continue
        _check_pruned(tmp_path / f"out{i}.safetensors", weights[i], 0.5)
        succeeded += 1
    assert succeeded >= 1
    assert waited, "no job waited for memory: the budget did not hold the second worker back"


# ---------------------------------------------------------------- spool disk

def _rejected_too_large(srv) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(r'bonsai_rejected_total\{.*reason="too_large".*\} ([0-9.e+]+)$', line)
        if match:
            total += float(match.group(1))
    return total


def _two_mib_model() -> bytes:
    return safetensors_io.dumps({"w.weight": np.ones((512, 1024), np.float32)})


def test_upload_over_max_spool_bytes_is_resource_exhausted(start_server, spool, mlp_safetensors):
    srv = start_server([f"--spool_dir={spool}", f"--max_spool_bytes={4 * MiB}", DISK_ONLY])
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        assert c.capabilities().limits.max_spool_bytes == 4 * MiB
        expect_error(EXHAUSTED, lambda: c.compress(_two_mib_model()), "max_spool_bytes")
        assert_compress_works(c, mlp_safetensors)  # a job that fits still runs
    assert os.listdir(spool) == []


def test_client_does_not_retry_an_upload_that_can_never_fit_the_spool(start_server, mlp_safetensors):
    """RESOURCE_EXHAUSTED is "busy, retry" or "too large, never": a job over
    the whole spool budget is the second kind, like one over max_model_bytes."""
    srv = start_server([f"--max_spool_bytes={4 * MiB}", DISK_ONLY])
    retry = bonsai.RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
    with bonsai.Client(srv.target, timeout=60, retry=retry) as c:
        before = _rejected_too_large(srv)
        expect_error(EXHAUSTED, lambda: c.compress(_two_mib_model()), "max_spool_bytes")
        tries = _rejected_too_large(srv) - before
    assert tries == 1, f"the client sent a job that can never fit {tries:.0f} times"
