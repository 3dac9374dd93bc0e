"""`make bench`: runs every benchmark against its named baseline in the same
run and prints `figure | bonsai | baseline | ratio | bar | met?`, then
writes everything measured to BUILD_DIR/bench-results.json.

Builds nothing (make bench builds first). Timings are figures, never
assertions: a missed bar is reported, not failed; the exit status is
non-zero only when a benchmark broke or computed a wrong result. A benchmark
whose feature is not there yet (sharded, until the CLI takes folders) shows
SKIPPED in its row and says why under the table.

    bench/run_all.py --build-dir build [--quick] [--only engine,e2e,...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "client", "python"))
sys.path.insert(0, HERE)
import bench_model  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
TIMEOUT = 3600  # seconds per benchmark program: they end by themselves, this is a backstop


@dataclass
class Row:
    figure: str
    bonsai: str
    baseline: str
    ratio: Optional[float]  # how many times better bonsai is, or a multiple where the bar says "<="
    bar: str
    met: Optional[bool]  # None: a figure without a bar
    detail: Dict = field(default_factory=dict)


@dataclass
class Context:
    build_dir: str
    quick: bool
    data_dir: str
    env: Dict[str, str]
    shapes: Dict[str, tuple]
    results: Dict = field(default_factory=dict)  # shared between benchmarks (torch timing)
    skipped: Dict[str, str] = field(default_factory=dict)  # benchmark -> why it could not run


def run_json(command: List[str], env: Dict[str, str]) -> dict:
    """Runs a benchmark program and returns the JSON object it prints last."""
    print("  $", " ".join(command), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{os.path.basename(command[0] if command[0] != sys.executable else command[1])} "
                           f"exited with {done.returncode}:\n{done.stderr[-4000:]}\n{done.stdout[-2000:]}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def binary(ctx: Context, name: str) -> str:
    path = os.path.join(ctx.build_dir, "bin", name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: build first (make bench)")
    return path


def seconds(value: float) -> str:
    return f"{value:.3f} s" if value >= 0.01 else f"{value * 1e3:.2f} ms"


# ------------------------------------------------------------ magnitude

def global_model(ctx: Context) -> str:
    tensors, rows, cols = ctx.shapes["global"]
    return bench_model.model_path(ctx.data_dir, tensors, rows, cols)


def torch_global(ctx: Context, compare: Optional[str] = None) -> dict:
    """torch's global_unstructured on the model, timed once per process (it is slow)."""
    if "torch_global" not in ctx.results:
        command = [sys.executable, os.path.join(HERE, "torch_global_magnitude.py"), global_model(ctx),
                   "--repeats", "1" if ctx.quick else "2"]
        if compare:
            command += ["--compare", compare]
        ctx.results["torch_global"] = run_json(command, ctx.env)
    return ctx.results["torch_global"]


def bench_engine(ctx: Context) -> List[Row]:
    model = global_model(ctx)
    ours = run_json([binary(ctx, "global_magnitude_bench"), "--model", model, "--repeats", "3"], ctx.env)
    ctx.results["engine_global"] = ours
    torch = torch_global(ctx, ctx.results.get("e2e", {}).get("output"))
    if not ours["zeros_ok"] or torch["zeros"] != ours["expected_zeros"]:
        raise RuntimeError(f"zero counts wrong: bonsai ok={ours['zeros_ok']}, torch {torch['zeros']} "
                           f"vs expected {ours['expected_zeros']}")
    label = f"{ours['params'] / 1e6:.0f}M params in {ours['tensors']} tensors"
    ratio = torch["seconds"] / ours["method_seconds"]
    cpu_ratio = torch["cpu_seconds"] / ours["method_cpu_seconds"]
    rows = [
        Row(f"engine: global magnitude 0.5, {label} (passes + Apply), wall",
            seconds(ours["method_seconds"]), f"torch global_unstructured {seconds(torch['seconds'])}",
            ratio, ">= 100x", ratio >= 100, {"bonsai": ours, "torch": torch}),
        Row("engine: same, CPU time", seconds(ours["method_cpu_seconds"]),
            f"torch {seconds(torch['cpu_seconds'])}", cpu_ratio, ">= 100x", cpu_ratio >= 100),
        Row("engine: same with model Read/Write per pass (engine loop)", seconds(ours["loop_seconds"]),
            f"torch {seconds(torch['seconds'])}", torch["seconds"] / ours["loop_seconds"], "-", None),
    ]
    if "job_seconds" in ours:
        rows.append(Row(
            "engine: whole RunCompressionJob (parse..serialize, sha256+zstd)", seconds(ours["job_seconds"]),
            f"torch {seconds(torch['seconds'])}", torch["seconds"] / ours["job_seconds"], "-", None,
            {k: ours[k] for k in ours if k.startswith("job_")}))
    return rows


def interleaved(ctx: Context, commands: Dict[str, List[str]], rounds: int) -> Dict[str, List[dict]]:
    """Runs each program once per round, taking turns, so that a change in
    the other tenants' load falls on every side of a ratio alike (run one
    after the other, minutes apart, they saw different machines). Returns
    each program's rounds."""
    results: Dict[str, List[dict]] = {name: [] for name in commands}
    for _ in range(rounds):
        for name, command in commands.items():
            results[name].append(run_json(command + ["--repeats", "1"], ctx.env))
    return results


def fastest(rounds: List[dict]) -> dict:
    """The fastest round, with every round's wall time; memory peaks are the
    highest of all rounds and CPU times the lowest."""
    best = dict(min(rounds, key=lambda r: r["seconds"]))
    best["runs"] = [r["seconds"] for r in rounds]
    if "vm_hwm_bytes" in best:
        best["vm_hwm_bytes"] = max(r["vm_hwm_bytes"] for r in rounds)
    if "cpu_seconds" in best:
        best["cpu_seconds"] = min(r["cpu_seconds"] for r in rounds)
    return best


def bench_e2e(ctx: Context) -> List[Row]:
    """The CLI end to end, beside the floors under its time: the same bytes
    through a bare grpcio echo, and the numpy script a user could run
    instead. Each is a fresh process timed from start to exit; every round's
    output is checked."""
    model = global_model(ctx)
    out = os.path.join(ctx.data_dir, "e2e-pruned.safetensors")
    copy = os.path.join(ctx.data_dir, "echo-copy.safetensors")
    pruned = os.path.join(ctx.data_dir, "numpy-pruned.safetensors")
    rounds = interleaved(ctx, {
        "bonsai": [sys.executable, os.path.join(HERE, "e2e_compress.py"), model, "--out", out,
                   "--server", ctx.env["BONSAI_SERVER"]],
        "echo": [sys.executable, os.path.join(HERE, "grpc_echo.py"), model, "--out", copy],
        "numpy": [sys.executable, os.path.join(HERE, "numpy_global_magnitude.py"), model, "--out", pruned],
    }, 1 if ctx.quick else 2)
    for path in (copy, pruned):
        os.unlink(path)
    for r in rounds["bonsai"]:
        if not r["zeros_ok"]:
            raise RuntimeError(f"e2e output has {r['zeros']} zeros, expected {r['expected_zeros']}")
    if not all(r["same_bytes"] for r in rounds["echo"]):
        raise RuntimeError("the grpcio echo wrote back other bytes than it was sent")
    for r in rounds["numpy"]:
        if not r["zeros_ok"]:
            raise RuntimeError(f"numpy script left {r['zeros']} zeros, expected {r['expected_zeros']}")
    ours, echo, script = (fastest(rounds[name]) for name in ("bonsai", "echo", "numpy"))
    ours["output"] = out
    ctx.results["e2e"], ctx.results["grpc_echo"], ctx.results["numpy_global"] = ours, echo, script
    torch = torch_global(ctx, out)
    model_bytes = ours["model_bytes"]
    torch_mb_s = model_bytes / 1e6 / torch["seconds"]
    ratio = torch["seconds"] / ours["seconds"]
    cpu_ratio = torch["cpu_seconds"] / ours["cpu_seconds"]
    limit = 2.5 * model_bytes + 200 * MIB
    hwm = ours["vm_hwm_bytes"]
    return [
        Row(f"e2e: python3 -m bonsai compress, {model_bytes / MIB:.0f} MiB safetensors, global 0.5, wall",
            seconds(ours["seconds"]), f"torch global_unstructured {seconds(torch['seconds'])}",
            ratio, ">= 20x", ratio >= 20, {"bonsai": ours}),
        Row("e2e: same, CPU time (client + server)", seconds(ours["cpu_seconds"]),
            f"torch {seconds(torch['cpu_seconds'])}", cpu_ratio, ">= 20x", cpu_ratio >= 20),
        Row("e2e: throughput (model bytes / wall time)", f"{ours['throughput_mb_s']:.1f} MB/s",
            f"torch {torch_mb_s:.1f} MB/s", ours["throughput_mb_s"] / torch_mb_s, "-", None),
        Row("e2e: peak server memory, VmHWM / model size", f"{hwm / MIB:.0f} MiB",
            f"model {model_bytes / MIB:.0f} MiB", hwm / model_bytes,
            f"<= 2.5x + 200 MiB = {limit / MIB:.0f} MiB", hwm <= limit),
        Row("e2e: same CLI run / bare Python grpcio echo of the file (1 MiB chunks, bidi, to disk), time",
            seconds(ours["seconds"]), f"grpcio echo {seconds(echo['seconds'])}", ours["seconds"] / echo["seconds"],
            "<= 1.5x", ours["seconds"] / echo["seconds"] <= 1.5, {"echo": echo}),
        Row("e2e: same CLI run vs local numpy script (read, np.partition, zero, write)",
            seconds(ours["seconds"]), f"numpy {seconds(script['seconds'])}", script["seconds"] / ours["seconds"],
            ">= 2x", script["seconds"] / ours["seconds"] >= 2, {"numpy": script}),
    ]


# ------------------------------------------------------------ issue 8: sharded checkpoints

def bench_sharded(ctx: Context) -> List[Row]:
    total, shards, hidden, intermediate, vocab = ctx.shapes["sharded"]
    label = f"{total / GIB:.3g} GiB HF folder, {shards} BF16 shards"
    result = run_json([sys.executable, os.path.join(HERE, "e2e_sharded.py"), "--total-bytes", str(total),
                       "--shards", str(shards), "--hidden", str(hidden), "--intermediate", str(intermediate),
                       "--vocab", str(vocab), "--work-dir", ctx.data_dir, "--server", ctx.env["BONSAI_SERVER"]],
                      ctx.env)
    ctx.results["sharded"] = result
    if "skipped" in result:
        ctx.skipped["sharded"] = result["skipped"]
        return [Row(f"sharded: python3 -m bonsai compress FOLDER -o FOLDER, {label}", "SKIPPED", "-", None,
                    "server VmHWM < 1 GiB", None)]
    if result["output_problems"]:
        raise RuntimeError(f"sharded output folder: {'; '.join(result['output_problems'])}")
    if not result["zeros_ok"]:
        raise RuntimeError(f"sharded output has {result['zeros']} zeros, expected {result['expected_zeros']} "
                           "(one global threshold over every shard's selected tensors)")
    hwm, size = result["vm_hwm_bytes"], result["input_bytes"]
    return [
        Row(f"sharded: python3 -m bonsai compress FOLDER -o FOLDER, {label}, global 0.5, throughput",
            f"{result['throughput_mb_s']:.1f} MB/s", f"{size / 1e6:.0f} MB in {seconds(result['seconds'])}",
            None, "-", None, {"bonsai": result}),
        Row("sharded: peak server memory (VmHWM)", f"{hwm / MIB:.0f} MiB", f"model {size / MIB:.0f} MiB",
            hwm / size, "< 1 GiB", hwm < GIB),
    ]


# ------------------------------------------------------------ issue 3 methods

def bench_elementwise(ctx: Context) -> List[Row]:
    tensors, rows, cols = ctx.shapes["elementwise"]
    size = ["--tensors", str(tensors), "--rows", str(rows), "--cols", str(cols), "--repeats", "3"]
    ours = run_json([binary(ctx, "elementwise_methods_bench"), *size], ctx.env)
    theirs = run_json([sys.executable, os.path.join(HERE, "torch_elementwise.py"), *size], ctx.env)
    ctx.results["elementwise"] = {"bonsai": ours, "torch": theirs}
    label = f"{tensors}x{rows}x{cols} f32, {ours['bytes'] / MIB:.0f} MiB"
    return [Row(f"engine: {name} throughput, {label}", f"{ours[name]['gb_s']:.2f} GB/s",
                f"torch {theirs[name]['gb_s']:.2f} GB/s", ours[name]["gb_s"] / theirs[name]["gb_s"],
                ">= 1 GB/s", ours[name]["gb_s"] >= 1.0)
            for name in ("nm_2_4", "binarize", "ternarize", "rtn_4_g128")]


def bench_sparsegpt(ctx: Context) -> List[Row]:
    rows, cols, samples = ctx.shapes["sparsegpt"]
    data = os.path.join(ctx.data_dir, f"sparsegpt-{rows}x{cols}-{samples}.safetensors")
    theirs = run_json([sys.executable, os.path.join(HERE, "torch_sparsegpt.py"), data, "--rows", str(rows),
                       "--cols", str(cols), "--samples", str(samples)], ctx.env)
    ours = run_json([binary(ctx, "sparsegpt_bench"), "--data", data, "--samples", str(samples),
                     "--repeats", "1" if ctx.quick else "2"], ctx.env)
    ctx.results["sparsegpt"] = {"bonsai": ours, "torch": theirs}
    if ours["zeros"] != round(0.5 * ours["params"]):
        raise RuntimeError(f"sparsegpt left {ours['zeros']} zeros of {ours['params']}")
    ratio = theirs["seconds"] / ours["seconds"]
    cpu_ratio = theirs["cpu_seconds"] / ours["cpu_seconds"]
    # bonsai's time includes the exact reconstruction error its report gives;
    # the torch reference computes that figure after its timed algorithm.
    same_output = (theirs["seconds"] + theirs["error_seconds"]) / ours["seconds"]
    label = f"{rows}x{cols}, {samples} calibration rows, 0.5"
    beyond = lambda r: (r["vm_hwm_bytes"] - r["rss_before_bytes"]) / MIB  # noqa: E731
    return [
        Row(f"engine: sparsegpt {label}, wall (torch: algorithm only)", seconds(ours["seconds"]),
            f"torch reference {seconds(theirs['seconds'])}", ratio, ">= 2x", ratio >= 2,
            {"bonsai": ours, "torch": theirs}),
        Row("engine: sparsegpt, wall, both giving pruned weights + exact error", seconds(ours["seconds"]),
            f"torch {seconds(theirs['seconds'] + theirs['error_seconds'])}", same_output, ">= 2x",
            same_output >= 2),
        Row("engine: sparsegpt, CPU time (torch: algorithm only)", seconds(ours["cpu_seconds"]),
            f"torch {seconds(theirs['cpu_seconds'])}", cpu_ratio, ">= 2x", cpu_ratio >= 2),
        Row("engine: sparsegpt memory beyond the layer and its Hessian (VmHWM - RSS before)",
            f"{beyond(ours):.0f} MiB", f"torch {beyond(theirs):.0f} MiB",
            beyond(theirs) / max(beyond(ours), 1e-9), "-", None),
        Row("engine: sparsegpt relative reconstruction error", f"{ours['reconstruction_error']:.5f}",
            f"torch {theirs['reconstruction_error']:.5f}",
            theirs["reconstruction_error"] / ours["reconstruction_error"], "-", None),
    ]


# ------------------------------------------------------------ issue 11: quantization

def bench_gptq(ctx: Context) -> List[Row]:
    rows, cols, samples = ctx.shapes["sparsegpt"]
    data = os.path.join(ctx.data_dir, f"sparsegpt-{rows}x{cols}-{samples}.safetensors")
    theirs = run_json([sys.executable, os.path.join(HERE, "torch_gptq.py"), data, "--rows", str(rows),
                       "--cols", str(cols), "--samples", str(samples), "--bits", "4",
                       "--group-size", "128"], ctx.env)
    ours = run_json([binary(ctx, "sparsegpt_bench"), "--data", data, "--samples", str(samples),
                     "--method", "gptq", "--bits", "4", "--group_size", "128",
                     "--repeats", "1" if ctx.quick else "2"], ctx.env)
    ctx.results["gptq"] = {"bonsai": ours, "torch": theirs}
    ratio = theirs["seconds"] / ours["seconds"]
    cpu_ratio = theirs["cpu_seconds"] / ours["cpu_seconds"]
    same_output = (theirs["seconds"] + theirs["error_seconds"]) / ours["seconds"]
    # The same algorithm on the same grids: the errors differ only where a
    # float32 rounding went the other way.
    error_ratio = ours["reconstruction_error"] / theirs["reconstruction_error"]
    label = f"4-bit g128, {rows}x{cols}, {samples} calibration rows"
    beyond = lambda r: (r["vm_hwm_bytes"] - r["rss_before_bytes"]) / MIB  # noqa: E731
    return [
        Row(f"engine: gptq {label}, wall (torch: algorithm only)", seconds(ours["seconds"]),
            f"torch reference {seconds(theirs['seconds'])}", ratio, ">= 2x", ratio >= 2,
            {"bonsai": ours, "torch": theirs}),
        Row("engine: gptq, wall, both giving quantized weights + exact error", seconds(ours["seconds"]),
            f"torch {seconds(theirs['seconds'] + theirs['error_seconds'])}", same_output, ">= 2x",
            same_output >= 2),
        Row("engine: gptq, CPU time (torch: algorithm only)", seconds(ours["cpu_seconds"]),
            f"torch {seconds(theirs['cpu_seconds'])}", cpu_ratio, "-", None),
        Row("engine: gptq memory beyond the layer and its Hessian (VmHWM - RSS before)",
            f"{beyond(ours):.0f} MiB", f"torch {beyond(theirs):.0f} MiB",
            beyond(theirs) / max(beyond(ours), 1e-9), "-", None),
        Row("engine: gptq relative reconstruction error (same error?)", f"{ours['reconstruction_error']:.6f}",
            f"torch {theirs['reconstruction_error']:.6f}", error_ratio, "within 1%",
            abs(error_ratio - 1) <= 0.01),
    ]


def bench_lm_quality(ctx: Context) -> List[Row]:
    """issue 11's quality table as bars: the orderings a correct SparseGPT,
    Wanda and GPTQ show on a small LM (bench/lm_quality.py; docs/results.md
    has the whole table). The trained LM is cached in BUILD_DIR/lm-quality.
    --quick trains a 1-layer model for 40 steps: its orderings mean nothing."""
    command = [sys.executable, os.path.join(HERE, "lm_quality.py"), "--server", ctx.env["BONSAI_SERVER"],
               "--cache-dir", os.path.join(ctx.build_dir, "lm-quality")]
    result = run_json(command + (["--quick"] if ctx.quick else []), ctx.env)
    ctx.results["lm_quality"] = result
    if result["problems"]:
        raise RuntimeError("lm_quality: outputs of the wrong shape: " + "; ".join(result["problems"]))
    ppl = {r["label"]: r["perplexity"] for r in result["rows"]}
    rows = [Row("quality: byte LM held-out perplexity, dense", f"{result['dense_perplexity']:.3f}", "-", None,
                "-", None, {"rows": result["rows"]})]
    for o in result["orderings"]:
        better, worse = ppl[o["better"]], ppl[o["worse"]]
        rows.append(Row(f"quality: byte LM perplexity, {o['better']} vs {o['worse']}", f"{better:.3f}",
                        f"{o['worse']} {worse:.3f}", worse / better, "-" if ctx.quick else "<= baseline",
                        None if ctx.quick else o["held"]))
    return rows


# ------------------------------------------------------------ table

# Run in this order (e2e first: its output is what torch's masks are compared
# with); shown in DISPLAY order.
BENCHMARKS: Dict[str, Callable[[Context], List[Row]]] = {
    "e2e": bench_e2e,
    "engine": bench_engine,
    "elementwise": bench_elementwise,
    "sparsegpt": bench_sparsegpt,
    "sharded": bench_sharded,
    "gptq": bench_gptq,
    "lm_quality": bench_lm_quality,
}
DISPLAY = ["engine", "e2e", "sharded", "elementwise", "sparsegpt", "gptq", "lm_quality"]


def format_table(rows: List[Row]) -> str:
    header = ("figure", "bonsai", "baseline", "ratio", "bar", "met?")
    cells = [header] + [(r.figure, r.bonsai, r.baseline, "-" if r.ratio is None else f"{r.ratio:.2f}x",
                         r.bar, {True: "yes", False: "NO", None: "-"}[r.met]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(cell, widths)) for cell in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build-dir", default="build")
    p.add_argument("--quick", action="store_true", help="small sizes: checks the plumbing in seconds")
    p.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(BENCHMARKS))
    args = p.parse_args()

    build_dir = os.path.abspath(args.build_dir)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(REPO, "client", "python"),
                                                      env.get("PYTHONPATH")]))
    env.setdefault("BONSAI_SERVER", os.path.join(build_dir, "bin", "bonsai-server"))
    # sharded: (total bytes, shards, hidden, intermediate, vocab)
    shapes = {"global": (6, 1024, 1024), "elementwise": (2, 1024, 1024), "sparsegpt": (512, 512, 512),
              "sharded": (128 * MIB, 4, 1024, 2816, 8000)} \
        if args.quick else \
        {"global": (6, 4096, 4096), "elementwise": (4, 4096, 4096), "sparsegpt": (4096, 4096, 4096),
         "sharded": (8 * GIB, 16, 4096, 11008, 32000)}
    ctx = Context(build_dir, args.quick, os.path.join(build_dir, "bench-data"), env, shapes)
    os.makedirs(ctx.data_dir, exist_ok=True)  # --only sparsegpt or gptq writes its data first

    selected = [name for name in BENCHMARKS if not args.only or name in args.only.split(",")]
    rows_of: Dict[str, List[Row]] = {}
    errors: Dict[str, str] = {}
    started = time.time()
    for name in selected:
        print(f"[{name}]", flush=True)
        try:
            rows_of[name] = BENCHMARKS[name](ctx)
        except Exception as e:  # report and go on: one broken benchmark must not hide the others
            errors[name] = f"{type(e).__name__}: {e}"
            print(f"  FAILED: {errors[name]}", flush=True)

    rows = [row for name in DISPLAY for row in rows_of.get(name, [])]
    print()
    print(format_table(rows))
    for name, reason in ctx.skipped.items():
        print(f"\n{name} SKIPPED: {reason}")
    for name, error in errors.items():
        print(f"\n{name} FAILED: {error}")
    results = {"quick": args.quick, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "seconds": time.time() - started, "rows": [asdict(r) for r in rows], "errors": errors,
               "skipped": ctx.skipped, "raw": ctx.results}
    path = os.path.join(build_dir, "bench-results.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"\nresults: {path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
