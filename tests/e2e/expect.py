"""What the tests compare against: torch's pruning, and how a refusal looks."""
from __future__ import annotations

import copy

import grpc
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

import bonsai


def _weighted_modules(model: nn.Module):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def torch_pruned(model: nn.Module, sparsity: float, scope: str) -> nn.Module:
    """A copy of `model` pruned by torch: l1_unstructured per layer, or global_unstructured."""
    pruned = copy.deepcopy(model)
    modules = _weighted_modules(pruned)
    if scope == "global":
        prune.global_unstructured([(m, "weight") for _, m in modules], pruning_method=prune.L1Unstructured,
                                  amount=sparsity)
    else:
        for _, m in modules:
            prune.l1_unstructured(m, "weight", amount=sparsity)
    for _, m in modules:
        prune.remove(m, "weight")
    return pruned.eval()


def torch_masks(model: nn.Module, sparsity: float, scope: str) -> dict:
    """{"<module>.weight": bool array of kept weights}."""
    pruned = torch_pruned(model, sparsity, scope)
    return {f"{name}.weight": (m.weight.detach().numpy() != 0) for name, m in _weighted_modules(pruned)}


def smallest_k_mask(values: np.ndarray, k: int) -> np.ndarray:
    """Kept-mask that prunes the k smallest magnitudes (values must be tie-free)."""
    flat = np.abs(values).ravel()
    keep = np.ones(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[:k]] = False
    return keep.reshape(values.shape)


def expect_error(code: grpc.StatusCode, call, *words: str) -> bonsai.BonsaiError:
    """Runs `call`, expects a BonsaiError with `code` whose message names each of `words`."""
    with pytest.raises(bonsai.BonsaiError) as info:
        call()
    err = info.value
    assert err.code == code, f"expected {code.name}, got {err.code_name}: {err.message}"
    message = err.message.lower()
    assert len(message) >= 20, f"message is too terse to help: {err.message!r}"
    for word in words:
        assert word.lower() in message, f"message does not mention {word!r}: {err.message!r}"
    return err


def assert_compress_works(client: bonsai.Client, model_bytes: bytes) -> None:
    """A healthy server prunes a small model correctly after whatever came before."""
    result = client.compress(model_bytes, method="magnitude", sparsity=0.5)
    assert result.model and result.report.totals.prunable_params > 0
    assert abs(result.report.totals.sparsity - 0.5) < 0.01
