"""The HTML report, rendered in a real browser (Debian's headless Chromium).

The page must draw every chart it announces without a script error, show
tensor names from the model as text (a hostile name must not become markup),
and need no network. The screenshot is kept as a test artifact
(BONSAI_TEST_ARTIFACTS, else the test's tmp_path) for a person to look at.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from bonsai import report_html, safetensors_io
from test_cli import run_cli

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def render_in_browser(page: str, screenshot: str) -> tuple:
    """(the DOM after the scripts ran, Chromium's stderr with console output)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: deploy/install-deps.sh installs it")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--enable-logging=stderr", "--v=0", "--window-size=1200,1600"]
    with tempfile.TemporaryDirectory() as profile:
        common = [CHROMIUM, *flags, f"--user-data-dir={profile}"]
        dom = subprocess.run([*common, "--dump-dom", f"file://{page}"], capture_output=True, text=True,
                             timeout=120)
        subprocess.run([*common, f"--screenshot={screenshot}", f"file://{page}"], capture_output=True,
                       timeout=120)
    return dom.stdout, dom.stderr


def artifact_dir(tmp_path) -> str:
    directory = os.environ.get("BONSAI_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(directory, exist_ok=True)
    return directory


def assert_all_charts_drew(dom: str, console: str) -> int:
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert "data-error" not in body.group(0), body.group(0)
    assert not re.search(r"Uncaught|CONSOLE\(\d+\).*[Ee]rror", console), console[-2000:]
    announced = len(re.findall(r'class="chart"', dom))
    drawn = len(re.findall(r'class="chart"[^>]*data-drawn="true"', dom))
    charts = re.search(r'data-charts="(\d+)"', body.group(0))
    assert announced > 0 and drawn == announced and charts and int(charts.group(1)) == announced, \
        (announced, drawn, body.group(0))
    return announced


def test_cli_writes_a_report_page_whose_charts_all_draw(server, tmp_path):
    rng = np.random.default_rng(3)
    model = {f"layers.{i}.mlp.weight": rng.standard_normal((64, 96), dtype=np.float32) for i in range(4)}
    src, out, page = tmp_path / "model.safetensors", tmp_path / "out.safetensors", tmp_path / "report.html"
    safetensors_io.write(str(src), model)
    proc = run_cli("compress", str(src), "-o", str(out), "--method", "magnitude", "--sparsity", "0.6",
                   "--output", "packed", "--report-html", str(page), "--quiet", target=server.target)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), "the page must fetch nothing"

    shot = os.path.join(artifact_dir(tmp_path), "report_html_cli.png")
    dom, console = render_in_browser(str(page), shot)
    charts = assert_all_charts_drew(dom, console)
    assert charts >= 3  # sparsity, error and bytes at least; packed output adds bits per weight
    for name in model:
        assert name in dom
    assert os.path.getsize(shot) > 10_000  # a picture, not an empty page


def test_hostile_tensor_names_stay_text(client, tmp_path):
    name = '<img src=x onerror="document.title=1">"</script><script>document.body.dataset.error=2</script>'
    model = {name: np.arange(1, 65, dtype=np.float32).reshape(8, 8)}
    result = client.compress(safetensors_io.dumps(model), include=["img"], sparsity=0.5)
    page = tmp_path / "hostile.html"
    result.save_html(str(page))
    dom, console = render_in_browser(str(page), str(tmp_path / "hostile.png"))
    assert_all_charts_drew(dom, console)
    assert "<img" not in dom.split("<script", 1)[0].split("<body", 1)[1]
    assert "document.title=1" in dom  # shown, escaped, as the tensor's name


def test_report_page_renders_from_a_report_dict_with_zeros_left_out(tmp_path):
    """proto3 JSON leaves zero fields out; the page must not depend on them."""
    page = tmp_path / "minimal.html"
    report_html.write({"method": "magnitude", "format": "onnx",
                       "tensors": [{"name": "fc.weight", "sparsity": 0.5}]}, str(page))
    dom, console = render_in_browser(str(page), str(tmp_path / "minimal.png"))
    assert assert_all_charts_drew(dom, console) == 2
