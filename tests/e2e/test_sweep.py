"""`bonsai sweep`: each layer's error at several sparsities, against numpy,
and a suggestion that reaches its target and applies as a rules file."""
from __future__ import annotations

import json

import numpy as np

from bonsai import safetensors_io
from test_cli import run_cli
from test_report_html import assert_all_charts_drew, render_in_browser

SPARSITIES = [0.25, 0.5, 0.75]


def magnitude_error(w: np.ndarray, sparsity: float) -> float:
    """‖W − W′‖/‖W‖ after zeroing the smallest round(sparsity·n) magnitudes."""
    flat = np.abs(w.astype(np.float64)).ravel()
    k = int(round(sparsity * flat.size))
    dropped = np.sort(flat)[:k]
    return float(np.sqrt((dropped ** 2).sum() / (flat ** 2).sum()))


def layers():
    rng = np.random.default_rng(5)
    # Heavy-tailed weights lose little when their many small ones go; a
    # uniform layer loses much more at the same sparsity.
    return {"robust.weight": (rng.standard_normal((64, 64)) ** 3).astype(np.float32),
            "fragile.weight": rng.uniform(0.5, 1.0, (64, 64)).astype(np.float32),
            "middle.weight": rng.standard_normal((32, 64)).astype(np.float32)}


def test_sweep_matches_numpy_and_its_suggestion_reaches_the_target(client):
    model = layers()
    result = client.sweep(safetensors_io.dumps(model), SPARSITIES)
    assert result.metric == "relative_error"
    assert list(result.params) == list(model)  # model order
    for name, w in model.items():
        assert result.params[name] == w.size
        expected = [magnitude_error(w, s) for s in SPARSITIES]
        np.testing.assert_allclose(result.errors[name], expected, rtol=1e-5)

    suggestion = result.suggest(0.5)
    assert result.weighted_sparsity(suggestion) >= 0.5 - 1e-9
    assert suggestion["robust.weight"] > suggestion["fragile.weight"]
    total = sum(result.errors[n][SPARSITIES.index(s)] for n, s in suggestion.items() if s > 0)
    uniform = sum(e[SPARSITIES.index(0.5)] for e in result.errors.values())
    assert total < uniform  # better than 50% everywhere, the choice it replaces


def test_cli_sweep_writes_rules_that_apply_the_suggestion_and_a_page(server, tmp_path):
    model = layers()
    src = tmp_path / "model.safetensors"
    safetensors_io.write(str(src), model)
    rules, page = tmp_path / "rules.json", tmp_path / "sweep.html"
    proc = run_cli("sweep", str(src), "--sparsities", ",".join(map(str, SPARSITIES)), "--target-sparsity", "0.5",
                   "--rules-out", str(rules), "--html", str(page), target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert "suggested" in proc.stdout and "robust.weight" in proc.stdout

    out, report = tmp_path / "out.safetensors", tmp_path / "report.json"
    proc = run_cli("compress", str(src), "-o", str(out), "--rules", str(rules), "--report-json", str(report),
                   "--quiet", target=server.target)
    assert proc.returncode == 0, proc.stderr
    pruned = safetensors_io.load(str(out))
    chosen = {r["regex"].strip("^$").replace("\\", ""): r.get("sparsity", 0.0) for r in json.loads(rules.read_text())}
    zeros = sum(int((pruned[n] == 0).sum()) for n in model)
    assert zeros >= 0.5 * sum(w.size for w in model.values())
    for name, sparsity in chosen.items():
        assert int((pruned[name] == 0).sum()) == int(round(sparsity * model[name].size)), name

    dom, console = render_in_browser(str(page), str(tmp_path / "sweep.png"))
    assert assert_all_charts_drew(dom, console) == 1
