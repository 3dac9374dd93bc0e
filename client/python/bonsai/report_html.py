"""A compression report as one self-contained HTML page.

Per-layer charts (sparsity, relative and reconstruction error, bytes before
and after, bits per weight), the totals, the timings and the warnings. The
page fetches nothing: the report is embedded as JSON and a small inline
script draws the charts as SVG, so it opens from disk, from a CI artifact or
attached to an issue. Tensor names come from uploaded models, so the script
only ever sets them as text, never as markup.

    bonsai.report_html.write(result.report, "report.html")   # or result.save_html(...)
"""
from __future__ import annotations

import html
import json
from typing import Union

from google.protobuf import json_format

from bonsai.v1 import compressor_pb2 as pb

Report = Union[pb.CompressionReport, dict]

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2430; max-width: 1100px; }
h1 { font-size: 20px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 28px 0 8px; }
.sub { color: #5b6472; margin-bottom: 16px; }
table { border-collapse: collapse; } td, th { padding: 3px 12px 3px 0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.warn { background: #fff4d6; border-left: 4px solid #e0a800; padding: 6px 10px; margin: 4px 0; }
.chart svg { display: block; } .chart text { font-size: 11px; fill: #1d2430; }
.legend span { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 12px; }
"""

# Draws every chart from the embedded report. Each chart marks itself drawn;
# the body counts them, and any script error is written where a test (or a
# reader) sees it.
# What every page's script starts with: any script error lands where a test
# (or a reader) sees it, and `el` builds SVG nodes, setting text only as text.
SCRIPT_PRELUDE = r"""
  const SVG = "http://www.w3.org/2000/svg";
  window.addEventListener("error", e => { document.body.dataset.error = String(e.message); });
  const el = (tag, attrs, text) => {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
"""

_SCRIPT = r"""
(function () {
""" + SCRIPT_PRELUDE + r"""
  const report = JSON.parse(document.getElementById("bonsai-report").textContent);
  const tensors = report.tensors || [];
  const num = v => Number(v || 0);
  const fmtBytes = b => b >= 1 << 30 ? (b / (1 << 30)).toFixed(2) + " GiB" : b >= 1 << 20 ?
      (b / (1 << 20)).toFixed(1) + " MiB" : b >= 1024 ? (b / 1024).toFixed(1) + " KiB" : b + " B";
  let drawn = 0;

  // Horizontal bars, one row per tensor, one bar per series.
  function bars(id, series, format, fixedMax) {
    const box = document.getElementById(id);
    if (!box) return;
    const labelWidth = 300, width = 760, rowHeight = 8 + 11 * series.length;
    const max = fixedMax || Math.max(1e-30, ...series.flatMap(s => tensors.map(t => s.value(t))));
    const svg = el("svg", {width: width, height: rowHeight * tensors.length + 4,
                           role: "img", "aria-label": box.dataset.title});
    tensors.forEach((t, row) => {
      const y = row * rowHeight + 2;
      const name = t.name.length > 46 ? "…" + t.name.slice(-45) : t.name;
      const label = el("text", {x: 0, y: y + rowHeight / 2 + 3}, name);
      label.appendChild(el("title", {}, t.name));
      svg.appendChild(label);
      series.forEach((s, k) => {
        const v = s.value(t), w = Math.max(0, (width - labelWidth - 90) * v / max);
        const bar = el("rect", {x: labelWidth, y: y + 11 * k, width: w, height: 9, fill: s.color});
        bar.appendChild(el("title", {}, t.name + ": " + s.name + " " + format(v)));
        svg.appendChild(bar);
        svg.appendChild(el("text", {x: labelWidth + w + 4, y: y + 11 * k + 8}, format(v)));
      });
    });
    if (series.length > 1) {
      const legend = document.createElement("div");
      legend.className = "legend";
      for (const s of series) {
        const swatch = document.createElement("span");
        swatch.style.background = s.color;
        legend.appendChild(swatch);
        legend.appendChild(document.createTextNode(s.name));
      }
      box.appendChild(legend);
    }
    box.appendChild(svg);
    box.dataset.drawn = "true";
    drawn += 1;
  }

  const pct = v => (100 * v).toFixed(1) + "%";
  const sci = v => v === 0 ? "0" : v.toExponential(2);
  bars("chart-sparsity", [{name: "sparsity", color: "#2f7d4f", value: t => num(t.sparsity)}], pct, 1);
  bars("chart-error", [{name: "relative error ‖W−W′‖/‖W‖", color: "#c0562b",
                        value: t => num(t.relative_error)}], sci);
  bars("chart-reconstruction", [{name: "reconstruction error", color: "#7a4fb0",
                                 value: t => num(t.reconstruction_error)}], sci);
  bars("chart-bytes", [{name: "stored densely", color: "#9aa5b5", value: t => num(t.dense_bytes)},
                       {name: "as written", color: "#2b6cb0", value: t => num(t.packed_bytes)}], fmtBytes);
  bars("chart-bits", [{name: "bits per weight", color: "#b0832b",
                       value: t => num(t.bits_per_weight)}], v => v.toFixed(2));
  document.body.dataset.charts = String(drawn);
})();
"""


def _as_dict(report: Report) -> dict:
    if isinstance(report, dict):
        return report
    return json_format.MessageToDict(report, preserving_proto_field_name=True,
                                     including_default_value_fields=True)


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _rows(pairs) -> str:
    return "".join(f"<tr><th>{html.escape(k)}</th><td class=num>{html.escape(v)}</td></tr>" for k, v in pairs)


def render(report: Report, title: str = "bonsai compression report") -> str:
    """The page for one job's report (a CompressionReport or its dict)."""
    data = _as_dict(report)
    tensors = data.get("tensors", [])
    totals = data.get("totals", {})
    timings = data.get("timings", {})
    num = lambda d, k: float(d.get(k, 0) or 0)  # noqa: E731: proto3 JSON leaves zeros out

    zstd = _bytes(num(totals, "model_bytes_out_zstd"))
    if totals.get("model_bytes_out_zstd_estimated"):
        zstd = "~" + zstd
    total_rows = [
        ("method", str(data.get("method", ""))), ("format", str(data.get("format", ""))),
        ("tensors compressed", str(len(tensors))),
        ("sparsity (selected tensors)", f"{100 * num(totals, 'sparsity'):.2f}%"),
        ("parameters", f"{int(num(totals, 'params')):,}"),
        ("bytes in", _bytes(num(totals, "model_bytes_in"))),
        ("bytes out", _bytes(num(totals, "model_bytes_out"))),
        ("bytes out, zstd", zstd),
        ("selected tensors, dense / as written",
         f"{_bytes(num(totals, 'dense_bytes'))} / {_bytes(num(totals, 'packed_bytes'))}"),
    ]
    timing_rows = [(k.replace("_seconds", "").replace("_", " "), f"{num(timings, k):.3f} s")
                   for k in ("queue_seconds", "receive_seconds", "parse_seconds", "compress_seconds",
                             "serialize_seconds", "send_seconds", "total_seconds")]
    warnings = "".join(f"<div class=warn>{html.escape(w)}</div>" for w in data.get("warnings", []))
    notes = [(t.get("name", ""), t.get("note", "")) for t in tensors if t.get("note")]
    note_html = "".join(f"<div class=warn>{html.escape(n)}: {html.escape(v)}</div>" for n, v in notes)

    def chart(chart_id: str, heading: str, show: bool) -> str:
        if not show:
            return ""
        return (f"<h2>{html.escape(heading)}</h2>"
                f"<div class=chart id={chart_id} data-title=\"{html.escape(heading)}\"></div>")

    any_of = lambda key: any(num(t, key) > 0 for t in tensors)  # noqa: E731
    charts = "".join([
        chart("chart-sparsity", "Sparsity per tensor", bool(tensors)),
        chart("chart-error", "Relative error per tensor", bool(tensors)),
        chart("chart-reconstruction", "Reconstruction error on the calibration inputs",
              any_of("reconstruction_error")),
        chart("chart-bytes", "Bytes per tensor, dense and as written", any_of("dense_bytes")),
        chart("chart-bits", "Bits per weight", any_of("bits_per_weight")),
    ])
    # "</" would end the script element early; JSON allows "<\/" for it.
    embedded = json.dumps(data, sort_keys=True).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<div class=sub>{len(tensors)} tensors · {html.escape(str(data.get('method', '')))} ·
{html.escape(str(data.get('format', '')))}</div>
{warnings}{note_html}
<h2>Totals</h2><table>{_rows(total_rows)}</table>
<h2>Timings</h2><table>{_rows(timing_rows)}</table>
{charts}
<script type="application/json" id="bonsai-report">{embedded}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def write(report: Report, path: str, title: str = "bonsai compression report") -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(report, title))
