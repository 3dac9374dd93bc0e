"""A sensitivity sweep: how much each layer suffers at each sparsity.

Pruning users run one before choosing per-layer targets: the same method at
several sparsities, each layer's error at each, and from that table a set of
per-layer sparsities that reaches a total target while hurting least. Each
sparsity is one ordinary Compress job against the server (layer scope, so a
layer's error depends on its own sparsity only); the outputs are written to
a temporary folder and dropped, so a sweep of a large model needs no more
memory than one job.

The suggestion is greedy, and says so: every layer starts dense; the step
that adds the least error per weight pruned is taken, one level at a time,
until the parameter-weighted sparsity reaches the target. The error is the
reconstruction error where calibration was given, else the relative weight
error ‖W−W′‖/‖W‖.
"""
from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import tempfile
from typing import Dict, List, Optional, Sequence

from bonsai.report_html import SCRIPT_PRELUDE
from bonsai.v1 import compressor_pb2 as pb


@dataclasses.dataclass
class SweepResult:
    method: str
    sparsities: List[float]
    params: Dict[str, int]              # tensor -> weights, in model order
    errors: Dict[str, List[float]]      # tensor -> error at each sparsity
    metric: str                         # "reconstruction_error" or "relative_error"
    reports: List[pb.CompressionReport]

    def suggest(self, target: float) -> Dict[str, float]:
        """Per-layer sparsities (a level of the sweep, or 0) whose weighted
        mean reaches `target`, chosen greedily by error per weight pruned."""
        if not 0.0 <= target <= max(self.sparsities, default=0.0):
            raise ValueError(f"target {target} is outside the swept range 0..{max(self.sparsities)}")
        levels = [0.0] + self.sparsities
        errors = {name: [0.0] + errs for name, errs in self.errors.items()}
        level = {name: 0 for name in self.params}
        total = sum(self.params.values())
        pruned = 0.0
        while pruned < target * total - 1e-9:
            best, best_cost = None, None
            for name, at in level.items():
                if at + 1 >= len(levels):
                    continue
                weights = (levels[at + 1] - levels[at]) * self.params[name]
                cost = (errors[name][at + 1] - errors[name][at]) / max(weights, 1e-12)
                if best_cost is None or cost < best_cost:
                    best, best_cost = name, cost
            if best is None:
                break
            pruned += (levels[level[best] + 1] - levels[level[best]]) * self.params[best]
            level[best] += 1
        return {name: levels[at] for name, at in level.items()}

    def rules(self, sparsities: Dict[str, float]) -> List[dict]:
        """Recipe rules applying per-layer sparsities (`compress(rules=...)`,
        CLI `--rules`): one exact-name rule per tensor, `none` for those left dense."""
        return [{"regex": f"^{re.escape(name)}$", "method": self.method if s > 0 else "none",
                 **({"sparsity": s} if s > 0 else {})} for name, s in sparsities.items()]

    def weighted_sparsity(self, sparsities: Dict[str, float]) -> float:
        total = sum(self.params.values())
        return sum(self.params[n] * s for n, s in sparsities.items()) / total if total else 0.0

    def table(self, suggestion: Optional[Dict[str, float]] = None) -> str:
        width = max([len("tensor")] + [len(n) for n in self.params])
        head = f"{'tensor':<{width}}  " + "  ".join(f"{s:>9.2f}" for s in self.sparsities)
        if suggestion is not None:
            head += "  suggested"
        lines = [f"{self.metric} at each sparsity ({self.method})", head]
        for name in self.params:
            row = f"{name:<{width}}  " + "  ".join(f"{e:>9.2e}" for e in self.errors[name])
            if suggestion is not None:
                row += f"  {suggestion[name]:>9.2f}"
            lines.append(row)
        return "\n".join(lines)

    def save_html(self, path: str, suggestion: Optional[Dict[str, float]] = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(_page(self, suggestion))


def run(client, model, sparsities: Sequence[float], *, method: str = "magnitude",
        progress=None, **compress_options) -> SweepResult:
    """One layer-scope job per sparsity; see the module's doc."""
    levels = sorted({float(s) for s in sparsities})
    if not levels or not all(0.0 < s < 1.0 for s in levels):
        raise ValueError(f"sparsities must be in (0, 1); got {list(sparsities)}")
    for forbidden in ("output_path", "sparsity", "scope"):
        if forbidden in compress_options:
            raise TypeError(f"a sweep sets {forbidden} itself")
    reports = []
    with tempfile.TemporaryDirectory(prefix="bonsai-sweep-") as scratch:
        for k, sparsity in enumerate(levels):
            # A model given as bytes stays in memory anyway; a path's output
            # goes to the scratch folder, as a file or a folder like its input.
            source = _path_of(model)
            out = None
            if source:
                out = os.path.join(scratch, f"out{k}{os.path.splitext(source)[1] if os.path.isfile(source) else ''}")
            result = client.compress(model, method=method, sparsity=sparsity, scope="layer",
                                     output_path=out, **compress_options)
            reports.append(result.report)
            if progress is not None:
                progress(k + 1, len(levels))
            if out is not None:
                _remove(out)
    params: Dict[str, int] = {}
    for t in reports[0].tensors:
        params[t.name] = t.params
    use_reconstruction = any(t.reconstruction_error > 0 for r in reports for t in r.tensors)
    metric = "reconstruction_error" if use_reconstruction else "relative_error"
    errors = {name: [] for name in params}
    for report in reports:
        by_name = {t.name: t for t in report.tensors}
        for name in params:
            errors[name].append(float(getattr(by_name[name], metric)))
    return SweepResult(method, levels, params, errors, metric, reports)


def _path_of(model) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else ""


def _remove(path: str) -> None:
    if os.path.isdir(path):
        import shutil
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.unlink(path)


# The page: one line per layer, error against sparsity, drawn as SVG by an
# inline script from the embedded table (names set as text only).
_SCRIPT = r"""
(function () {
""" + SCRIPT_PRELUDE + r"""
  const data = JSON.parse(document.getElementById("bonsai-sweep").textContent);
  const box = document.getElementById("chart-sweep");
  const W = 760, H = 380, L = 70, B = 40;
  const xs = [0].concat(data.sparsities);
  const max = Math.max(1e-30, ...Object.values(data.errors).flat());
  const x = s => L + (W - L - 20) * s / Math.max(...xs);
  const y = e => H - B - (H - B - 10) * e / max;
  const svg = el("svg", {width: W, height: H, role: "img", "aria-label": "error against sparsity"});
  svg.appendChild(el("line", {x1: L, y1: H - B, x2: W - 10, y2: H - B, stroke: "#555"}));
  svg.appendChild(el("line", {x1: L, y1: 10, x2: L, y2: H - B, stroke: "#555"}));
  for (const s of xs) svg.appendChild(el("text", {x: x(s) - 10, y: H - B + 16}, s.toFixed(2)));
  svg.appendChild(el("text", {x: W / 2 - 30, y: H - 6}, "sparsity"));
  svg.appendChild(el("text", {x: 4, y: 20}, max.toExponential(1)));
  const colors = ["#2b6cb0", "#c0562b", "#2f7d4f", "#7a4fb0", "#b0832b", "#3b8ea5", "#a33b63"];
  Object.keys(data.errors).forEach((name, i) => {
    const pts = xs.map((s, k) => x(s) + "," + y(k === 0 ? 0 : data.errors[name][k - 1])).join(" ");
    const line = el("polyline", {points: pts, fill: "none", stroke: colors[i % colors.length],
                                 "stroke-width": 1.5});
    line.appendChild(el("title", {}, name));
    svg.appendChild(line);
  });
  box.appendChild(svg);
  box.dataset.drawn = "true";
  document.body.dataset.charts = "1";
})();
"""


def _page(result: SweepResult, suggestion: Optional[Dict[str, float]]) -> str:
    rows = []
    for name in result.params:
        cells = "".join(f"<td class=num>{e:.3e}</td>" for e in result.errors[name])
        extra = f"<td class=num>{suggestion[name]:.2f}</td>" if suggestion else ""
        rows.append(f"<tr><th>{html.escape(name)}</th>{cells}{extra}</tr>")
    head = "".join(f"<th>{s:.2f}</th>" for s in result.sparsities)
    if suggestion:
        head += "<th>suggested</th>"
    summary = ""
    if suggestion:
        summary = (f"<p>Suggested per-layer sparsities reach {100 * result.weighted_sparsity(suggestion):.1f}% "
                   "of the weights (greedy: least error per weight pruned).</p>")
    data = json.dumps({"sparsities": result.sparsities, "errors": result.errors}).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>bonsai sensitivity sweep</title>
<style>body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; max-width: 1100px; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }} td, th {{ padding: 2px 10px 2px 0; }}
.chart text {{ font-size: 11px; }}</style></head>
<body><h1>Sensitivity sweep: {html.escape(result.method)}, {html.escape(result.metric.replace('_', ' '))}</h1>
{summary}
<div class=chart id=chart-sweep data-title="error against sparsity"></div>
<table><tr><th>tensor</th>{head}</tr>{''.join(rows)}</table>
<script type="application/json" id="bonsai-sweep">{data}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
