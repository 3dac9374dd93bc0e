"""Runs a real bonsai-server on free loopback ports for the end-to-end tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional, Sequence

import grpc

from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def server_binary() -> str:
    path = os.environ.get("BONSAI_SERVER", os.path.join(REPO, "build", "bin", "bonsai-server"))
    return os.path.abspath(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_bytes(pid: int, field: str) -> int:
    """A kB field of /proc/PID/status (VmRSS, VmHWM, ...) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status (has the process exited?)")


class ServerCrashed(RuntimeError):
    pass


class BonsaiServer:
    """One server process. `flags` are appended after the defaults, so they win.

    `wrapper` is an argv the server is started through (e.g. memory_limit's
    cgroup attach); it must exec the server, so that `pid` stays the server's.
    `channel_credentials` is what the readiness check connects with, for a
    server started with TLS flags.
    """

    def __init__(self, flags: Sequence[str] = (), workers: int = 2, binary: Optional[str] = None,
                 wrapper: Sequence[str] = (), channel_credentials: Optional[grpc.ChannelCredentials] = None):
        self.binary = binary or server_binary()
        self.channel_credentials = channel_credentials
        self.wrapper = list(wrapper)
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.args = [self.binary, f"--listen={self.target}", f"--workers={workers}",
                     f"--metrics_listen=127.0.0.1:{self.metrics_port}", *flags]
        self._log = tempfile.NamedTemporaryFile(prefix="bonsai-server-", suffix=".log", delete=False)
        self.proc: Optional[subprocess.Popen] = None
        self.stopped_by_us = False
        self.killed_after_timeout = False  # SIGTERM was not enough: it hung on the way out
        self.killed_on_purpose = False  # a test SIGKILLed it (kill())

    @property
    def pid(self) -> int:
        return self.proc.pid

    def start(self) -> "BonsaiServer":
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError(f"no bonsai-server at {self.binary}: build it (make build) or set BONSAI_SERVER")
        self.proc = subprocess.Popen(self.wrapper + self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        if self.channel_credentials is None:
            channel = grpc.insecure_channel(self.target)
        else:
            channel = grpc.secure_channel(self.target, self.channel_credentials)
        with channel:
            stub = pb_grpc.CompressorStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerCrashed(f"bonsai-server exited with {self.proc.returncode} while starting:\n{self.log()}")
                try:
                    stub.GetCapabilities(pb.GetCapabilitiesRequest(), timeout=1.0)
                    return
                except grpc.RpcError:
                    time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"bonsai-server did not answer GetCapabilities within {START_TIMEOUT}s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and not self.alive() and not self.stopped_by_us:
            raise ServerCrashed(f"bonsai-server died with status {self.proc.returncode}:\n{self.log()}")

    def rss_bytes(self) -> int:
        return proc_status_bytes(self.pid, "VmRSS")

    def vm_hwm_bytes(self) -> int:
        """The server's peak resident memory so far (while it runs)."""
        return proc_status_bytes(self.pid, "VmHWM")

    def log(self, tail: int = 8000) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            data = f.read()
        return data[-tail:].decode(errors="replace")

    def stop(self) -> Optional[int]:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.stopped_by_us = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.killed_after_timeout = True
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a test that wants a crash does: not counted as one."""
        self.stopped_by_us = True
        self.killed_on_purpose = True
        self.proc.kill()
        self.proc.wait(STOP_TIMEOUT)

    def describe_status(self, status: Optional[int]) -> str:
        if self.killed_after_timeout:
            return f"{status} (it did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM, so it was SIGKILLed)"
        return str(status)

    def close(self) -> None:
        self.stop()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except FileNotFoundError:
            pass
