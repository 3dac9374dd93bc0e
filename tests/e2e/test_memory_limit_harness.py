"""The memory-limit harness itself (memory_limit.py): a limit is enforced, a
process under it runs, VmHWM is read, and the group is gone afterwards.
The server's own memory bars are tested with it elsewhere."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import bonsai
import memory_limit
from bonsai import safetensors_io

MIB = 1 << 20
UNAVAILABLE = memory_limit.unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"memory-limit harness: {UNAVAILABLE}")

# `b"\x01" * n` writes every page, so all of it is resident (a bytearray(n)
# could stay untouched zero pages).
ALLOCATE = "import sys; data = b'\\x01' * int(sys.argv[1]); print('allocated', flush=True); sys.stdin.readline()"


def test_process_allocating_twice_the_limit_is_oom_killed():
    limit = 64 * MIB
    with memory_limit.MemoryGroup(limit) as group:
        done = subprocess.run(group.command([sys.executable, "-c", ALLOCATE, str(2 * limit)]),
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, timeout=60)
        assert done.returncode == -signal.SIGKILL, done
        assert "allocated" not in done.stdout
        assert group.oom_kills() >= 1
    assert not os.path.exists(group.path)


def test_process_under_the_limit_runs_and_its_vm_hwm_is_read():
    limit, size = 256 * MIB, 64 * MIB
    with memory_limit.MemoryGroup(limit) as group:
        child = subprocess.Popen(group.command([sys.executable, "-c", ALLOCATE, str(size)]),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "allocated\n"
            assert group.pids() == [child.pid]  # the wrapper exec'd: same pid, in the group
            hwm = memory_limit.vm_hwm_bytes(child.pid)
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(60) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert size <= hwm < limit
        assert group.oom_kills() == 0
    assert not os.path.exists(group.path)


def test_limited_server_compresses_inside_its_group_and_reports_vm_hwm():
    limit = 512 * MIB
    rng = np.random.default_rng(0)
    model = safetensors_io.dumps({f"layers.{i}.weight": rng.standard_normal((512, 512), dtype=np.float32)
                                  for i in range(4)})
    with memory_limit.limited_server(limit) as server:
        group = server.memory_group
        assert group.pids() == [server.pid]
        with open(f"/proc/{server.pid}/cgroup") as f:
            assert os.path.basename(group.path) in f.read()
        with bonsai.Client(server.target, timeout=120) as client:
            result = client.compress(model, method="magnitude", sparsity=0.5, scope="global")
        assert result.report.totals.model_bytes_out > 0
        hwm = server.vm_hwm_bytes()
        assert len(model) < hwm <= limit
        assert group.oom_kills() == 0
        server.check_alive()
    assert not os.path.exists(group.path)
