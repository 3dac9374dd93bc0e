"""Pruned ONNX models are valid and compute what the masked torch model computes."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

import models
import ort_runner
from expect import smallest_k_mask, torch_pruned


@pytest.fixture(scope="module", autouse=True)
def runtime():
    # A missing runtime is a broken test machine, not a reason to skip.
    try:
        ort_runner.check_runtime()
    except ort_runner.RuntimeMissing as err:
        pytest.fail(str(err))


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_pruned_onnx_passes_checker_and_matches_masked_torch_in_onnxruntime(client, request, arch, scope):
    model = request.getfixturevalue(arch)
    shape = models.MLP_INPUT if arch == "mlp" else models.CNN_INPUT
    result = client.compress(request.getfixturevalue(f"{arch}_onnx"), method="magnitude", sparsity=0.6, scope=scope)
    pruned = onnx.load_from_string(result.model)
    onnx.checker.check_model(pruned, full_check=True)
    x = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    got = ort_runner.run_onnx(result.model, {"input": x})["output"]
    with torch.no_grad():
        want = torch_pruned(model, 0.6, scope)(torch.from_numpy(x)).numpy()
        dense = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, dense, rtol=1e-3, atol=1e-4), "pruning changed nothing"


def test_weights_in_constant_nodes_and_if_subgraphs_are_pruned(client):
    data, weights = models.constant_and_if_model()
    result = client.compress(data, method="magnitude", sparsity=0.5)
    onnx.checker.check_model(onnx.load_from_string(result.model), full_check=True)
    out = models.onnx_tensors_everywhere(result.model)
    pruned = {}
    for name, original in weights.items():
        keep = smallest_k_mask(original, round(0.5 * original.size))
        np.testing.assert_array_equal(out[name] != 0, keep, err_msg=f"{name} was not pruned like torch would")
        np.testing.assert_array_equal(out[name][keep], original[keep])
        pruned[name] = np.where(keep, original, 0).astype(np.float32)
    reported = {t.name for t in result.report.tensors}
    assert set(weights) <= reported
    x = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    for cond, branch in ((True, "w_then"), (False, "w_else")):
        got = ort_runner.run_onnx(result.model, {"input": x, "cond": np.array(cond)})["output"]
        np.testing.assert_allclose(got, x @ pruned["w_const"] @ pruned[branch], rtol=1e-4, atol=1e-5)
