"""`python3 -m bonsai` end to end, as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from bonsai import safetensors_io

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.abspath(os.path.join(HERE, "..", "..", "client", "python"))
PYTHON = "/usr/bin/python3"


def run_cli(*args, target=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=CLIENT)
    if target is not None:
        env["BONSAI_TARGET"] = target
    return subprocess.run([PYTHON, "-m", "bonsai", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def test_cli_compress_writes_model_report_table_and_report_json(server, mlp, mlp_onnx, tmp_path):
    src, out, report = tmp_path / "mlp.onnx", tmp_path / "pruned.onnx", tmp_path / "report.json"
    src.write_bytes(mlp_onnx)
    proc = run_cli("compress", str(src), "-o", str(out), "--method", "magnitude", "--sparsity", "0.5",
                   "--scope", "global", "--exclude", "fc3", "--report-json", str(report), "--progress",
                   target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_size > 0
    data = json.loads(report.read_text())
    assert data["format"] == "onnx"
    names = {t["name"] for t in data["tensors"]}
    assert {"fc1.weight", "fc2.weight"} <= names and "fc3.weight" not in names
    assert [(f["name"], f["role"]) for f in data["files"]] == [("mlp.onnx", "model")]
    assert len(data["files"][0]["sha256"]) == 64 and "prunable_params" in data["totals"]
    assert "tensor" in proc.stdout and "fc1.weight" in proc.stdout and "sparsity" in proc.stdout
    assert "upload" in proc.stderr  # progress bars go to stderr (--progress: it is a pipe here)


def test_cli_target_flag_overrides_environment(server, mlp_safetensors, tmp_path):
    src = tmp_path / "mlp.safetensors"
    src.write_bytes(mlp_safetensors)
    proc = run_cli("--target", server.target, "compress", str(src), "-o", str(tmp_path / "o.safetensors"),
                   "--sparsity", "0.8", "--quiet", target="127.0.0.1:1")
    assert proc.returncode == 0, proc.stderr
    out = safetensors_io.load(tmp_path / "o.safetensors")
    assert np.mean(out["fc1.weight"] == 0) > 0.79


def test_cli_inspect_and_capabilities_print_json(server, cnn_onnx, tmp_path):
    src = tmp_path / "cnn.onnx"
    src.write_bytes(cnn_onnx)
    proc = run_cli("inspect", str(src), "--json", target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert {t["name"] for t in json.loads(proc.stdout)["tensors"]} >= {"conv1.weight", "fc.weight"}
    proc = run_cli("inspect", str(src), target=server.target)
    assert proc.returncode == 0 and "conv1.weight" in proc.stdout
    proc = run_cli("capabilities", "--json", target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert "magnitude" in {m["name"] for m in json.loads(proc.stdout)["methods"]}


def test_cli_invalid_request_prints_code_and_message_and_exits_2(server, mlp_safetensors, tmp_path):
    src = tmp_path / "mlp.safetensors"
    src.write_bytes(mlp_safetensors)
    proc = run_cli("compress", str(src), "-o", str(tmp_path / "o"), "--sparsity", "1.5", target=server.target)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: INVALID_ARGUMENT: ")
    assert not (tmp_path / "o").exists()


def test_cli_unreachable_server_exits_1(tmp_path):
    proc = run_cli("--timeout", "5", "capabilities", target="127.0.0.1:1")
    assert proc.returncode == 1
    assert "error: UNAVAILABLE: " in proc.stderr
