"""Errors the client raises by the server's reason (trailing metadata
`bonsai-error-reason`), not by parsing messages or asking GetCapabilities."""
from __future__ import annotations

import urllib.request

import grpc
import pytest

import bonsai
from held_job import HeldJob


def raised(client, model, **spec):
    with pytest.raises(bonsai.BonsaiError) as info:
        client.compress(model, **spec)
    return info.value


def handled_calls(server, method: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and f'grpc_method="{method}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_bad_spec_is_invalid_spec(strict_client, mlp_safetensors):
    error = raised(strict_client, mlp_safetensors, method="no-such-method", sparsity=0.5)
    assert type(error) is bonsai.InvalidSpec and isinstance(error, bonsai.InvalidArgument)
    assert error.reason == "INVALID_SPEC" and error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error.__cause__, grpc.RpcError), "the RpcError must stay reachable as __cause__"


def test_a_selection_that_matches_nothing_is_invalid_spec(strict_client, mlp_safetensors):
    error = raised(strict_client, mlp_safetensors, method="magnitude", sparsity=0.5,
                   include=["^no-such-tensor$"], include_only=True)
    assert type(error) is bonsai.InvalidSpec, error


def test_bytes_that_are_no_model_are_invalid_model(strict_client):
    error = raised(strict_client, b"\x80\x04 this is a pickle, not a model" * 10, method="magnitude", sparsity=0.5)
    assert type(error) is bonsai.InvalidModel and error.reason == "INVALID_MODEL"
    with pytest.raises(bonsai.InvalidModel):
        strict_client.inspect(b"not a model at all")


def test_a_model_over_the_limit_is_too_large_and_not_retried(start_server, mlp_safetensors):
    srv = start_server([f"--max_model_bytes={len(mlp_safetensors) - 1}"])
    retry = bonsai.RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.02)
    capabilities_before = handled_calls(srv, "GetCapabilities")  # the readiness check's
    with bonsai.Client(srv.target, timeout=60, retry=retry) as client:
        error = raised(client, mlp_safetensors, method="magnitude", sparsity=0.5)
    assert type(error) is bonsai.ModelTooLarge and error.reason == "MODEL_TOO_LARGE"
    assert "--max_model_bytes" in error.message
    assert handled_calls(srv, "Compress") == 1, "a job that can never fit must not be retried"
    assert handled_calls(srv, "GetCapabilities") == capabilities_before, "the reason, not a second call, tells too large from busy"


def refused_while_one_job_is_held(srv, model) -> bonsai.BonsaiError:
    """The error a second job gets while a first one holds its slot."""
    with bonsai.Client(srv.target, timeout=60) as holder:
        held = HeldJob(holder, model)
        try:
            assert held.admitted.wait(30), "the held job was never admitted"
            with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as client:
                return raised(client, model, method="magnitude", sparsity=0.5)
        finally:
            held.finish()


def test_a_full_server_is_busy_with_a_retry_after(start_server, mlp_safetensors):
    srv = start_server(["--max_queued_jobs=0", "--max_jobs_per_peer=0"], workers=1)
    error = refused_while_one_job_is_held(srv, mlp_safetensors)
    assert type(error) is bonsai.ServerBusy and error.reason == "QUEUE_FULL"
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error.retry_after == 1.0


def test_one_client_over_its_share_is_busy_by_peer_limit(start_server, mlp_safetensors):
    srv = start_server(["--max_queued_jobs=1", "--max_jobs_per_peer=1"], workers=1)
    error = refused_while_one_job_is_held(srv, mlp_safetensors)
    assert type(error) is bonsai.ServerBusy and error.reason == "PEER_LIMIT"


def test_nothing_listening_is_unavailable():
    from server_process import free_port
    with bonsai.Client(f"127.0.0.1:{free_port()}", timeout=5, retry=bonsai.NO_RETRY) as client:
        with pytest.raises(bonsai.ServerUnavailable) as info:
            client.capabilities()
    assert info.value.reason is None and info.value.code == grpc.StatusCode.UNAVAILABLE
