"""Baselines for elementwise_methods_bench: 2:4, binarize, ternarize and
4-bit round-to-nearest in groups of 128 written directly in torch (vectorised, as one would in a notebook), on
float32 weights of the same sizes; prints one JSON object in the same shape.

    torch_elementwise.py [--tensors 4] [--rows 4096] [--cols 4096] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def nm_2_4(w: torch.Tensor) -> torch.Tensor:
    groups = w.reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, torch.topk(groups.abs(), 2, dim=1).indices, True)
    return (groups * keep).reshape(w.shape)


def binarize(w: torch.Tensor) -> torch.Tensor:
    alpha = w.abs().mean(dim=1, keepdim=True)
    return torch.where(w < 0, -alpha, alpha)


def ternarize(w: torch.Tensor) -> torch.Tensor:
    gamma = w.abs().mean()
    return (w / (gamma + 1e-5)).round().clamp(-1, 1) * gamma


def rtn_4_g128(w: torch.Tensor) -> torch.Tensor:
    """Round-to-nearest, 4 bits, groups of 128 along a row, bonsai's grid."""
    g = w.reshape(w.shape[0], -1, 128)
    lo = g.amin(dim=2, keepdim=True).clamp(max=0)
    hi = g.amax(dim=2, keepdim=True).clamp(min=0)
    scale = (hi - lo) / 15
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round(-lo / scale).clamp(0, 15)
    q = (torch.round(g / scale) + zero).clamp(0, 15)
    return (scale * (q - zero)).reshape(w.shape)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tensors", type=int, default=4)
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(args.rows, args.cols, generator=generator) * 0.02 for _ in range(args.tensors)]
    size = 4.0 * args.tensors * args.rows * args.cols
    result = {"bytes": size, "torch": torch.__version__, "threads": torch.get_num_threads()}
    for name, fn in (("nm_2_4", nm_2_4), ("binarize", binarize), ("ternarize", ternarize),
                     ("rtn_4_g128", rtn_4_g128)):
        wall, cpu = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            out = [fn(w) for w in weights]
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu_start)
            del out
        result[name] = {"seconds": min(wall), "cpu_seconds": min(cpu), "gb_s": size / 1e9 / min(wall),
                        "cpu_gb_s": size / 1e9 / min(cpu)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
