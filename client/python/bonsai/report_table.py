"""Plain-text tables for reports, inspections and capabilities."""
from __future__ import annotations

from typing import Iterable, Sequence

from bonsai.v1 import compressor_pb2 as pb


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    return f"{n} B"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool] = ()) -> str:
    rows = [list(map(str, r)) for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    right = list(right) + [False] * (len(headers) - len(right))

    def line(cells):
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def _shape(shape, after=()) -> str:
    text = "x".join(map(str, shape)) or "scalar"
    if after and list(after) != list(shape):
        text += " -> " + "x".join(map(str, after))
    return text


def format_report(report: pb.CompressionReport, packed: bool = False) -> str:
    """With `packed`, each tensor's bytes as stored and bits per weight (codes,
    scales and zero points of quantized weights; masks and indices of sparse
    ones) are shown too."""
    def sizes(t):
        return (human_bytes(t.packed_bytes), f"{t.bits_per_weight:.3f}") if packed else ()
    rows = [(t.name, _shape(t.shape, t.shape_after), t.dtype, f"{t.sparsity:.4f}",
             f"{t.relative_error:.4g}") + sizes(t) + (t.method + (f" [{t.rule}]" if t.rule else ""), t.note)
            for t in report.tensors]
    heads = ("tensor", "shape", "dtype", "sparsity", "rel.error") + (("stored", "bits/w") if packed else ()) + (
        "method", "note")
    out = [table(heads, rows, right=(False, False, False, True, True) + ((True, True) if packed else ()))]
    tot, tim = report.totals, report.timings
    out.append("")
    out.append(f"format       {report.format}    method {report.method}")
    params = f"{tot.params:,}"
    if tot.params_after and tot.params_after != tot.params:
        params += f" -> {tot.params_after:,}"
    out.append(f"params       {params} (selected {tot.prunable_params:,}, nonzero after {tot.nonzero_after:,})")
    out.append(f"sparsity     {tot.sparsity:.4f} over the selected tensors")
    if packed:
        out.append(f"stored       {human_bytes(tot.packed_bytes)} of {human_bytes(tot.dense_bytes)} dense for the "
                   f"selected tensors, {tot.bits_per_weight:.3f} bits per weight")
    out.append(f"bytes in     {human_bytes(tot.model_bytes_in)}")
    about = "~" if tot.model_bytes_out_zstd_estimated else ""
    out.append(f"bytes out    {human_bytes(tot.model_bytes_out)} (zstd {about}{human_bytes(tot.model_bytes_out_zstd)})")
    if tot.macs_before:
        out.append(f"MACs         {tot.macs_before:,} -> {tot.macs_after:,}")
    out.append(f"timings      queue {tim.queue_seconds:.3f}s  receive {tim.receive_seconds:.3f}s  "
               f"parse {tim.parse_seconds:.3f}s  compress {tim.compress_seconds:.3f}s  "
               f"serialize {tim.serialize_seconds:.3f}s  send {tim.send_seconds:.3f}s  "
               f"total {tim.total_seconds:.3f}s")
    for f in report.files:
        out.append(f"file         {f.name} ({f.role}) {human_bytes(f.bytes_in)} -> {human_bytes(f.bytes_out)}"
                   f"  sha256 {f.sha256}")
    for w in report.warnings:
        out.append(f"warning: {w}")
    return "\n".join(out)


def format_inspect(response: pb.InspectResponse) -> str:
    files = len({t.file for t in response.tensors}) > 1
    rows = [((t.file,) if files else ()) + (t.name, _shape(t.shape), t.dtype, f"{t.params:,}",
             f"{t.zeros:,}" if t.zeros_known else "-", t.role, "yes" if t.selected else "")
            for t in response.tensors]
    heads = (("file",) if files else ()) + ("tensor", "shape", "dtype", "params", "zeros", "role", "selected")
    right = ((False,) if files else ()) + (False, False, False, True, True)
    out = [table(heads, rows, right=right)]
    out.append("")
    out.append(f"format {response.format}: {response.total_params:,} params in {human_bytes(response.total_bytes)}, "
               f"{response.selected_params:,} selected")
    heads = [t.name for t in response.tensors if t.output_head]
    if heads:
        out.append(f"output heads (structured pruning leaves them whole unless an --include names them): "
                   f"{', '.join(heads)}")
    return "\n".join(out)


def format_capabilities(caps: pb.Capabilities) -> str:
    out = [f"bonsai {caps.version}: formats {', '.join(caps.formats)}"]
    lim = caps.limits
    out.append(f"limits: model {human_bytes(lim.max_model_bytes)}, chunk {human_bytes(lim.max_chunk_bytes)}, "
               f"calibration {human_bytes(lim.max_calibration_bytes)}, {lim.workers} workers, "
               f"{lim.max_queued_jobs} queued jobs, working memory {human_bytes(lim.max_memory_bytes)}, "
               f"spool {human_bytes(lim.max_spool_bytes)} (in memory {human_bytes(lim.memory_spool_bytes)}), "
               f"{lim.max_files} files a job")
    per_peer = f"{lim.max_jobs_per_peer} jobs per client" if lim.max_jobs_per_peer else "no per-client cap"
    job_time = f"jobs end after {lim.max_job_seconds:g} s" if lim.max_job_seconds else "no job time cap"
    out.append(f"        {per_peer}, {job_time}, uploads idle for {lim.receive_idle_timeout_seconds:g} s "
               f"are ended")
    for m in caps.methods:
        calib = " (needs calibration)" if m.needs_calibration else ""
        out.append(f"\n{m.name}{calib} [{', '.join(m.formats)}]: {m.description}")
        for p in m.parameters:
            default = f" = {p.default_value}" if p.default_value else ""
            out.append(f"  {p.name} ({p.type}{default}): {p.description}")
    return "\n".join(out)
