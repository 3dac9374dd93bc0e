"""Baseline for sparsegpt_bench: SparseGPT written straightforwardly in torch,
following the structure of the reference implementation (IST-DASLab
sparsegpt, SparseGPT.fasterprune): Hessian, dead inputs, dampening, Cholesky
inverse as an upper factor, blocks of 128 columns with per-column OBS
updates inside the block and one lazy update of the columns to its right.

    torch_sparsegpt.py DATA [--rows 4096] [--cols 4096] [--samples 4096] [--sparsity 0.5]

Writes DATA first when it does not exist: a safetensors file with "weight"
[rows, cols] and "gram" [cols, cols] = X^T X of `samples` random input rows
(fixed seed), the problem sparsegpt_bench solves too. Prints one JSON
object: time, peak memory (VmHWM of this process during the pruning, reset
just before) and the relative reconstruction error tr(dW H dW^T) / tr(W H W^T).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402
from bonsai import safetensors_io  # noqa: E402


def make_data(path: str, rows: int, cols: int, samples: int) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(rows, cols, generator=generator) * 0.02
    # Inputs with unequal channel scales, as real activations have.
    x = torch.randn(samples, cols, generator=generator) * (0.5 + torch.rand(cols, generator=generator))
    gram = x.T @ x
    partial = path + ".partial"
    safetensors_io.write(partial, {"weight": weight.numpy(), "gram": gram.numpy()})
    os.replace(partial, path)


def prepare(W: torch.Tensor, H: torch.Tensor, percdamp: float):
    """The start both OBS sweeps (SparseGPT, GPTQ) share: a float copy of W with
    dead inputs zeroed, and the upper Cholesky factor of the dampened inverse
    Hessian."""
    W = W.clone().float()
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(W.shape[1])
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    return W, torch.linalg.cholesky(H, upper=True)


def sparsegpt(W: torch.Tensor, H: torch.Tensor, sparsity: float, blocksize: int = 128,
              percdamp: float = 0.01) -> torch.Tensor:
    W, Hinv = prepare(W, H, percdamp)
    columns = W.shape[1]

    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
        mask1 = tmp <= thresh

        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def blas_threads():
    """Threads of the BLAS torch calls for matmul and LAPACK, which are not
    torch's own intra-op threads (torch.get_num_threads): with Debian's torch
    that BLAS is OpenBLAS, threaded on its own. None when it cannot be asked."""
    try:
        import ctypes
        return int(ctypes.CDLL("libopenblas.so.0").openblas_get_num_threads())
    except (OSError, AttributeError):
        return None


def status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def data_arguments(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("data")
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--samples", type=int, default=4096)
    return p


def measure(args, solve) -> dict:
    """Times `solve(W, H)` on DATA (written first when missing) and returns
    the figures both baselines print, with the solution as "result"."""
    if not os.path.exists(args.data):
        make_data(args.data, args.rows, args.cols, args.samples)
    arrays = bench_model.load(args.data)
    W = torch.tensor(arrays["weight"])
    H = torch.tensor(arrays["gram"])
    del arrays

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss_before = status_bytes("VmRSS")
    start, cpu_start = time.perf_counter(), time.process_time()
    result = solve(W, H)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak = status_bytes("VmHWM")

    # The figure bonsai's report carries for every layer, computed the
    # straightforward way; timed apart, so the algorithm alone stays comparable.
    error_start, error_cpu_start = time.perf_counter(), time.process_time()
    dW = W - result
    error = float(((dW @ H) * dW).sum() / ((W @ H) * W).sum())
    return {"rows": W.shape[0], "cols": W.shape[1], "samples": args.samples,
            "seconds": seconds, "cpu_seconds": cpu_seconds, "vm_hwm_bytes": peak,
            "rss_before_bytes": rss_before, "params": W.numel(), "reconstruction_error": error,
            "error_seconds": time.perf_counter() - error_start,
            "error_cpu_seconds": time.process_time() - error_cpu_start,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "blas_threads": blas_threads(), "result": result}


def main() -> None:
    p = data_arguments("SparseGPT in torch, timed")
    p.add_argument("--sparsity", type=float, default=0.5)
    args = p.parse_args()
    figures = measure(args, lambda W, H: sparsegpt(W, H, args.sparsity))
    figures["zeros"] = int((figures.pop("result") == 0).sum())
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
