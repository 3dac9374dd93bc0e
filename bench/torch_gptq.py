"""Baseline for the gptq benchmark: GPTQ written straightforwardly in torch
from the paper (Frantar et al. 2022, Algorithm 1, with its lazy batch
updates and Cholesky form of the inverse Hessian), the way
torch_sparsegpt.py writes SparseGPT: Hessian, dead inputs, dampening,
Cholesky inverse as an upper factor, blocks of 128 columns with per-column
quantization and error feedback inside the block and one lazy update of the
columns to its right. Grids: bonsai's (server/methods/quant_grid.h), an
asymmetric min-max grid holding 0 per group of 128 columns, chosen when the
sweep reaches the group, from its current weights.

    torch_gptq.py DATA [--rows 4096] [--cols 4096] [--samples 4096] [--bits 4] [--group-size 128]

DATA is torch_sparsegpt.py's file ("weight" and "gram"), written first when
missing. Prints one JSON object: time, CPU time, peak memory and the
relative reconstruction error tr(dW H dW^T) / tr(W H W^T), computed after
the timed algorithm.
"""
from __future__ import annotations

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_sparsegpt  # noqa: E402


def grid(w: torch.Tensor, max_code: int):
    lo = w.amin(dim=1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0)
    scale = (hi - lo) / max_code
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    zero = torch.round(-lo / scale).clamp(0, max_code)
    return scale, zero


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, max_code: int) -> torch.Tensor:
    q = (torch.round(w / scale) + zero).clamp(0, max_code)
    return scale * (q - zero)


def gptq(W: torch.Tensor, H: torch.Tensor, bits: int = 4, groupsize: int = 128, blocksize: int = 128,
         percdamp: float = 0.01) -> torch.Tensor:
    W, Hinv = torch_sparsegpt.prepare(W, H, percdamp)
    columns = W.shape[1]
    max_code = 2 ** bits - 1

    Q = torch.zeros_like(W)
    scale = zero = None
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]

        for i in range(count):
            if (i1 + i) % groupsize == 0:
                # The group's current weights (groups of 128 start blocks of 128).
                scale, zero = grid(W1[:, i:i + groupsize], max_code)
            w = W1[:, i]
            d = Hinv1[i, i]
            q = quantize(w.unsqueeze(1), scale, zero, max_code).flatten()
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1

        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return Q


def main() -> None:
    p = torch_sparsegpt.data_arguments("GPTQ in torch, timed")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--group-size", type=int, default=128)
    args = p.parse_args()
    figures = torch_sparsegpt.measure(args, lambda W, H: gptq(W, H, args.bits, args.group_size))
    del figures["result"]
    figures.update(bits=args.bits, group_size=args.group_size)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
