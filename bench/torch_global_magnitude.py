"""Baseline: torch.nn.utils.prune.global_unstructured(L1Unstructured) on the
weights of a safetensors model, timed; prints one JSON object.

    torch_global_magnitude.py MODEL [--amount 0.5] [--repeats 1] [--compare PRUNED]

With --compare, also counts the weights whose pruned/kept state differs from
bonsai's output PRUNED (the two may break ties at the threshold differently)
and the kept weights whose value changed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.utils.prune as prune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_model  # noqa: E402


class Weight(torch.nn.Module):
    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(values, requires_grad=False)


def run_once(arrays, amount: float):
    modules = [Weight(torch.from_numpy(np.array(a))) for a in arrays.values()]
    start, cpu_start = time.perf_counter(), time.process_time()
    prune.global_unstructured([(m, "weight") for m in modules],
                              pruning_method=prune.L1Unstructured, amount=amount)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    return seconds, cpu_seconds, [m.weight.detach() for m in modules]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--amount", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--compare", help="bonsai's pruned safetensors of the same model")
    args = p.parse_args()

    arrays = bench_model.load(args.model)
    params = sum(a.size for a in arrays.values())
    runs, cpu_runs, pruned = [], [], None
    for _ in range(args.repeats):
        pruned = None  # free the previous run's tensors first
        seconds, cpu_seconds, pruned = run_once(arrays, args.amount)
        runs.append(seconds)
        cpu_runs.append(cpu_seconds)
    result = {"seconds": min(runs), "cpu_seconds": min(cpu_runs), "runs": runs, "params": params,
              "zeros": int(sum(int((w == 0).sum()) for w in pruned)),
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    if args.compare:
        theirs = bench_model.load(args.compare)
        mask_differs = value_differs = 0
        for (name, original), ours in zip(arrays.items(), pruned):
            other = torch.from_numpy(np.array(theirs[name]))
            mask_differs += int(((ours == 0) != (other == 0)).sum())
            kept = other != 0
            value_differs += int((other[kept] != torch.from_numpy(np.array(original))[kept]).sum())
        result.update(compare_mask_differs=mask_differs, compare_kept_values_changed=value_differs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
