"""bonsai-server as an operator meets it: --help with bonsai's own flags,
--version, a ready line with the ports it really bound, and one log line per
job (text, or JSON with --log_format=json)."""
from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import grpc
import pytest

import bonsai
from server_process import BonsaiServer, server_binary


def _run(*flags, timeout=30):
    return subprocess.run([server_binary(), *flags], capture_output=True, text=True, timeout=timeout)


def test_help_lists_bonsais_flags():
    proc = _run("--help")
    out = proc.stdout + proc.stderr
    assert "No flags matched" not in out
    for flag in ("--listen", "--workers", "--max_model_bytes", "--log_format", "--tls_cert_file"):
        assert flag in out, flag
    assert "bonsai-server: a gRPC service" in out and "bonsai-server: bonsai-server" not in out


def test_version_prints_version_and_build(server):
    proc = _run("--version")
    assert proc.returncode == 0
    with bonsai.Client(server.target) as c:
        version = c.capabilities().version
    assert re.fullmatch(rf"bonsai-server {re.escape(version)} \(revision [^)]+\)\n", proc.stdout), proc.stdout


def test_an_unknown_log_format_is_refused_at_start():
    proc = _run("--log_format=yaml", "--listen=127.0.0.1:0", "--metrics_listen=")
    assert proc.returncode == 1 and "--log_format must be text or json; got 'yaml'" in proc.stderr


def test_ready_line_prints_the_ports_bound_for_port_zero():
    proc = subprocess.Popen([server_binary(), "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
                             "--workers=1"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        match = re.match(r"bonsai-server ready on 127\.0\.0\.1:(\d+) .*metrics=127\.0\.0\.1:(\d+)\)", line)
        assert match, line
        grpc_port, metrics_port = int(match.group(1)), int(match.group(2))
        assert grpc_port > 0 and metrics_port > 0
        with bonsai.Client(f"127.0.0.1:{grpc_port}", timeout=10) as c:
            assert c.capabilities().version
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert b"bonsai_build_info" in r.read()
    finally:
        proc.terminate()
        proc.wait(30)


def _job_lines(srv: BonsaiServer, count: int, pattern: str) -> list:
    deadline = time.monotonic() + 10
    while True:
        lines = [l for l in srv.log(tail=1 << 20).splitlines() if re.search(pattern, l)]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def test_one_text_log_line_per_job(start_server, mlp_safetensors):
    srv = start_server()
    with bonsai.Client(srv.target, timeout=60, retry=bonsai.NO_RETRY) as c:
        result = c.compress(mlp_safetensors, method="magnitude", sparsity=0.5)
        with pytest.raises(bonsai.BonsaiError):
            c.compress(mlp_safetensors, method="magnitude", sparsity=0.5, exclude=["."])
    ok, failed = _job_lines(srv, 2, r" job id=")
    assert re.search(r" INFO job id=\d+ rpc=Compress peer=ipv[46]:\S+ method=magnitude format=safetensors "
                     rf"bytes_in={len(mlp_safetensors)} bytes_out={result.bytes_out} seconds=\d+\.\d{{3}} "
                     r"status=OK$", ok), ok
    assert re.search(r" WARN job id=\d+ .* status=INVALID_ARGUMENT message=\"no tensor of the model is selected",
                     failed), failed
    assert int(re.search(r"id=(\d+)", failed).group(1)) == int(re.search(r"id=(\d+)", ok).group(1)) + 1


def test_inspect_calls_log_a_line_too(start_server, cnn_onnx):
    srv = start_server()
    with bonsai.Client(srv.target, timeout=60) as c:
        c.inspect(cnn_onnx)
    [line] = _job_lines(srv, 1, r" job id=")
    assert re.search(rf" INFO job id=\d+ rpc=Inspect peer=ipv[46]:\S+ method=- format=onnx bytes_in={len(cnn_onnx)} "
                     r"bytes_out=0 seconds=\d+\.\d{3} status=OK$", line), line


def test_json_log_lines_with_log_format_json(start_server, mlp_onnx):
    srv = start_server(flags=["--log_format=json"])
    with bonsai.Client(srv.target, timeout=60) as c:
        result = c.compress(mlp_onnx, method="nm", options={"n": 2, "m": 4})
    lines = _job_lines(srv, 1, r'"event":"job"')
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["rpc"] == "Compress" and entry["method"] == "nm" and entry["format"] == "onnx"
    assert entry["bytes_in"] == len(mlp_onnx) and entry["bytes_out"] == result.bytes_out
    assert entry["status"] == "OK" and entry["level"] == "INFO" and isinstance(entry["seconds"], float)
    assert entry["peer"].startswith("ipv") and entry["id"] >= 1
    # Every other line is JSON too.
    srv.stop()
    for line in srv.log(tail=1 << 20).splitlines():
        if line.startswith("{"):
            json.loads(line)
        else:
            assert line.startswith("bonsai-server ready on"), line
