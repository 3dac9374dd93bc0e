"""Baseline: the local script a user would write instead of calling bonsai:
read a safetensors file (its header parsed here), one `np.partition` over
every |w| for the global threshold, zero the weights under it, write the
file. Prints one JSON object.

    numpy_global_magnitude.py MODEL --out PRUNED [--sparsity 0.5] [--repeats 1]

Each run is a fresh process timed from its start to its exit (Python and
numpy start-up included), as e2e_compress.py times bonsai's CLI; the process
reports its own stages beside. Every tensor in the file is pruned (the
benchmark model holds only weights), the smallest round(sparsity * n) of them:
ties at the threshold are zeroed in file order until the count is exact, so
the output's zero count can be checked as bonsai's is.

    numpy_global_magnitude.py --run-once MODEL --out PRUNED [--sparsity 0.5]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}


def read_model(path: str):
    """The file as one writable uint8 array and a view per tensor into it."""
    data = np.fromfile(path, dtype=np.uint8)
    (header_length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + header_length].tobytes())
    base = 8 + header_length  # a multiple of 8: writers pad the header so tensors stay aligned
    weights = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in DTYPES:
            raise ValueError(f"{name}: dtype {entry['dtype']} is not one of {sorted(DTYPES)}")
        begin, end = entry["data_offsets"]
        weights.append(data[base + begin:base + end].view(DTYPES[entry["dtype"]]))
    return data, weights


def prune(weights, sparsity: float) -> int:
    """Zeroes the round(sparsity * n) smallest |w| over all tensors; returns that count."""
    magnitudes = np.empty(sum(w.size for w in weights), dtype=np.result_type(*weights))
    start = 0
    for w in weights:
        np.abs(w, out=magnitudes[start:start + w.size])
        start += w.size
    k = int(np.rint(sparsity * magnitudes.size))
    if k == 0:
        return 0
    threshold = np.partition(magnitudes, k - 1)[k - 1]
    ties_left = k - int(np.count_nonzero(magnitudes < threshold))
    start = 0
    for w in weights:
        mag = magnitudes[start:start + w.size]
        start += w.size
        w[mag < threshold] = 0
        if ties_left > 0:
            ties = np.flatnonzero(mag == threshold)[:ties_left]
            w[ties] = 0
            ties_left -= ties.size
    return k


def run_once(model: str, out: str, sparsity: float) -> dict:
    t0 = time.perf_counter()
    data, weights = read_model(model)
    t1 = time.perf_counter()
    pruned = prune(weights, sparsity)
    t2 = time.perf_counter()
    data.tofile(out)
    t3 = time.perf_counter()
    return {"read_seconds": t1 - t0, "prune_seconds": t2 - t1, "write_seconds": t3 - t2,
            "pruned": pruned, "params": int(sum(w.size for w in weights))}


def timed_process(model: str, out: str, sparsity: float) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--run-once", model, "--out", out,
               "--sparsity", str(sparsity)]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"numpy script failed ({done.returncode}): {done.stderr[-4000:]}")
    stages = json.loads(done.stdout.splitlines()[-1])
    return {"seconds": seconds, **stages}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--run-once", action="store_true", help="be the timed process")
    args = p.parse_args()
    if args.run_once:
        print(json.dumps(run_once(args.model, args.out, args.sparsity)))
        return

    sys.path.insert(0, HERE)
    import bench_model
    runs = [timed_process(args.model, args.out, args.sparsity) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["seconds"])
    model_bytes = os.path.getsize(args.model)
    zeros, expected = bench_model.count_zeros(args.out), bench_model.expected_zeros(args.model, args.sparsity)
    print(json.dumps({
        "seconds": best["seconds"], "runs": [r["seconds"] for r in runs], "model_bytes": model_bytes,
        "throughput_mb_s": model_bytes / 1e6 / best["seconds"], "numpy": np.__version__,
        "zeros": zeros, "expected_zeros": expected, "zeros_ok": zeros == expected, "best_run": best}))


if __name__ == "__main__":
    main()
