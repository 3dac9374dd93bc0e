"""Inspect lists what bonsai would prune; GetCapabilities says what the server offers."""
from __future__ import annotations

import grpc
import numpy as np

import models
from bonsai import safetensors_io
from expect import expect_error


def test_capabilities_list_formats_methods_and_limits(start_server):
    srv = start_server(["--max_model_bytes=12345678", "--max_queued_jobs=3", "--max_job_seconds=600",
                        "--receive_idle_timeout_seconds=45"], workers=2)
    import bonsai
    with bonsai.Client(srv.target, timeout=30) as c:
        caps = c.capabilities()
    assert {"onnx", "safetensors"} <= set(caps.formats)
    methods = {m.name: m for m in caps.methods}
    assert "magnitude" in methods
    assert {"sparsity", "scope"} <= {p.name for p in methods["magnitude"].parameters}
    assert {"onnx", "safetensors"} <= set(methods["magnitude"].formats)
    assert not methods["magnitude"].needs_calibration
    assert caps.limits.max_model_bytes == 12345678
    assert caps.limits.workers == 2
    assert caps.limits.max_queued_jobs == 3
    assert caps.limits.max_chunk_bytes >= 1 << 20
    assert caps.limits.max_jobs_per_peer == 2 + 3 - 1  # the default: every slot but one
    assert caps.limits.max_job_seconds == 600
    assert caps.limits.receive_idle_timeout_seconds == 45
    assert caps.version


def test_capabilities_say_when_a_limit_is_off(start_server):
    srv = start_server(["--max_jobs_per_peer=0", "--max_job_seconds=0"], workers=1)
    import bonsai
    from bonsai.report_table import format_capabilities
    with bonsai.Client(srv.target, timeout=30) as c:
        caps = c.capabilities()
    assert caps.limits.max_jobs_per_peer == 0 and caps.limits.max_job_seconds == 0
    text = format_capabilities(caps)
    assert "no per-client cap" in text and "no job time cap" in text


def test_inspect_safetensors_lists_tensors_and_default_selection(client, mlp, mlp_safetensors):
    info = client.inspect(mlp_safetensors)
    assert info.format == "safetensors"
    state = models.state_arrays(mlp)
    tensors = {t.name: t for t in info.tensors}
    assert set(tensors) == set(state)
    for name, values in state.items():
        t = tensors[name]
        assert list(t.shape) == list(values.shape)
        assert t.dtype == "F32"
        assert t.params == values.size
        assert t.selected == (values.ndim >= 2), name
    assert info.total_params == sum(v.size for v in state.values())
    assert info.selected_params == sum(v.size for v in state.values() if v.ndim >= 2)
    assert info.total_bytes == len(mlp_safetensors)


def test_inspect_onnx_reports_roles_and_honours_include_exclude(client, cnn, cnn_onnx):
    info = client.inspect(cnn_onnx, exclude=["^fc\\."])
    assert info.format == "onnx"
    tensors = {t.name: t for t in info.tensors}
    assert tensors["conv1.weight"].role == "Conv.W" and tensors["conv1.weight"].selected
    assert tensors["conv2.weight"].selected
    assert tensors["fc.weight"].role.startswith("Gemm.B") and not tensors["fc.weight"].selected
    assert not tensors["conv1.bias"].selected
    assert info.selected_params == cnn.conv1.weight.numel() + cnn.conv2.weight.numel()


def test_inspect_counts_zeros(client):
    w = np.arange(1, 61, dtype=np.float32).reshape(6, 10)
    w[w % 3 == 0] = 0
    info = client.inspect(safetensors_io.dumps({"w.weight": w}))
    assert info.tensors[0].zeros == int((w == 0).sum())


def test_inspect_of_garbage_is_invalid_argument(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, lambda: client.inspect(b"definitely not a model" * 10))


def test_dns_target_with_round_robin_reaches_the_server(server, mlp_safetensors):
    """The form a headless Kubernetes service is reached by: dns:///name:port."""
    import bonsai
    with bonsai.Client(f"dns:///localhost:{server.port}", timeout=60) as c:
        assert c.capabilities().version
        assert c.compress(mlp_safetensors).report.totals.prunable_params > 0
