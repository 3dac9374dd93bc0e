"""End-to-end fixtures: a real bonsai-server, clients, and test models.

The session server runs with 2 workers on free loopback ports and is checked
after every test: if it died, the test that killed it fails. `start_server`
starts extra servers with their own flags (tiny limits, no queue) for the
limit tests. Every test runs under an alarm (default 300 s, or
@pytest.mark.timeout(seconds)), since pytest-timeout is not installed; a
whole-session watchdog dumps stacks and exits if even that is stuck.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "client", "python"))
sys.path.insert(0, HERE)

import bonsai  # noqa: E402
import models  # noqa: E402
from server_process import BonsaiServer  # noqa: E402

DEFAULT_TEST_TIMEOUT = 300
SESSION_WATCHDOG = 3600


class TestTimedOut(Exception):
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): fail the test when it runs longer")
    faulthandler.dump_traceback_later(SESSION_WATCHDOG, exit=True)


def pytest_unconfigure(config):
    faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("timeout")
    limit = int(marker.args[0]) if marker else DEFAULT_TEST_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimedOut(f"{item.nodeid} ran longer than {limit}s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ---------------------------------------------------------------- servers

@pytest.fixture(scope="session")
def server():
    """The shared server: 2 workers, default limits."""
    srv = BonsaiServer().start()
    yield srv
    crashed = not srv.alive() and not srv.stopped_by_us
    status = srv.stop()
    log = srv.log()
    srv.close()
    if crashed or (status is not None and status < 0 and status != -signal.SIGTERM):
        pytest.fail(f"bonsai-server ended with status {srv.describe_status(status)}:\n{log}")


@pytest.fixture(autouse=True)
def _server_survives(request):
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").check_alive()


@pytest.fixture
def client(server):
    with bonsai.Client(server.target, timeout=120) as c:
        yield c


@pytest.fixture
def strict_client(server):
    """No retries: tests that expect a refusal want to see the first one."""
    with bonsai.Client(server.target, timeout=120, retry=bonsai.NO_RETRY) as c:
        yield c


@pytest.fixture
def start_server():
    """Factory: start_server(flags=[...], workers=N) -> BonsaiServer, stopped at the end."""
    started = []

    def start(flags=(), workers=2):
        srv = BonsaiServer(flags, workers=workers)
        started.append(srv)
        return srv.start()
    yield start
    failures = []
    for srv in started:
        died = not srv.alive() and not srv.stopped_by_us
        status = srv.stop()
        if srv.killed_on_purpose:
            pass
        elif died or (status is not None and status < 0 and status != -signal.SIGTERM):
            failures.append(f"server {srv.args} ended with status {srv.describe_status(status)}:\n{srv.log()}")
        srv.close()
    if failures:
        pytest.fail("\n".join(failures))


# ---------------------------------------------------------------- models

@pytest.fixture(scope="session")
def mlp():
    return models.build_mlp()


@pytest.fixture(scope="session")
def cnn():
    return models.build_cnn()


@pytest.fixture(scope="session")
def mlp_safetensors(mlp):
    return models.to_safetensors(mlp)


@pytest.fixture(scope="session")
def cnn_safetensors(cnn):
    return models.to_safetensors(cnn)


@pytest.fixture(scope="session")
def mlp_onnx(mlp):
    return models.to_onnx(mlp, models.MLP_INPUT)


@pytest.fixture(scope="session")
def cnn_onnx(cnn):
    return models.to_onnx(cnn, models.CNN_INPUT)
