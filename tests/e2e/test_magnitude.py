"""Magnitude pruning gives exactly round(s*n) zeros and torch's own masks."""
from __future__ import annotations

import numpy as np
import pytest

import models
from bonsai import safetensors_io
from bonsai.v1 import compressor_pb2 as pb
from expect import torch_masks

SPARSITIES = [0.1, 0.5, 0.73, 0.9]


def _compress_and_read(client, model, fmt, sparsity, scope):
    if fmt == "safetensors":
        data = models.to_safetensors(model)
        result = client.compress(data, method="magnitude", sparsity=sparsity, scope=scope)
        return result, safetensors_io.loads(result.model)
    data = models.to_onnx(model, models.MLP_INPUT if isinstance(model, models.MLP) else models.CNN_INPUT)
    result = client.compress(data, method="magnitude", sparsity=sparsity, scope=scope)
    return result, models.onnx_initializers(result.model)


def _check_kept_values_unchanged(model, out, masks):
    original = models.state_arrays(model)
    for name, values in original.items():
        if name in masks:
            np.testing.assert_array_equal(out[name][masks[name]], values[masks[name]], err_msg=name)
        else:  # biases are not selected by default
            np.testing.assert_array_equal(out[name], values, err_msg=name)


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_layer_magnitude_prunes_round_s_n_per_tensor_like_torch_l1_unstructured(client, request, arch, fmt, sparsity):
    model = request.getfixturevalue(arch)
    result, out = _compress_and_read(client, model, fmt, sparsity, "layer")
    masks = torch_masks(model, sparsity, "layer")
    for name, keep in masks.items():
        assert int((out[name] == 0).sum()) == round(sparsity * keep.size), name
        np.testing.assert_array_equal(out[name] != 0, keep, err_msg=f"{name}: mask differs from torch")
        reported = result.tensor(name)
        assert reported.params == keep.size
        assert reported.nonzero_after == int(keep.sum())
        assert reported.sparsity == pytest.approx(1 - keep.sum() / keep.size)
    _check_kept_values_unchanged(model, out, masks)
    assert result.report.format == fmt


@pytest.mark.parametrize("fmt", ["safetensors", "onnx"])
@pytest.mark.parametrize("arch", ["mlp", "cnn"])
@pytest.mark.parametrize("sparsity", SPARSITIES)
def test_global_magnitude_prunes_round_s_n_overall_like_torch_global_unstructured(client, request, arch, fmt, sparsity):
    model = request.getfixturevalue(arch)
    result, out = _compress_and_read(client, model, fmt, sparsity, "global")
    masks = torch_masks(model, sparsity, "global")
    total = sum(m.size for m in masks.values())
    zeros = sum(int((out[name] == 0).sum()) for name in masks)
    assert zeros == round(sparsity * total)
    for name, keep in masks.items():
        np.testing.assert_array_equal(out[name] != 0, keep, err_msg=f"{name}: mask differs from torch")
    _check_kept_values_unchanged(model, out, masks)
    totals = result.report.totals
    assert totals.prunable_params == total
    assert totals.nonzero_after == total - zeros
    assert totals.sparsity == pytest.approx(zeros / total)


def test_global_magnitude_prunes_layers_unevenly(client, mlp, mlp_safetensors):
    """Layers at different scales lose different shares: the threshold is one."""
    result = client.compress(mlp_safetensors, method="magnitude", sparsity=0.5, scope="global")
    shares = sorted(t.sparsity for t in result.report.tensors if t.params and t.name.endswith("weight"))
    assert shares[-1] - shares[0] > 0.2


def test_exclude_and_overrides_change_what_is_pruned(client, mlp, mlp_safetensors):
    result = client.compress(mlp_safetensors, method="magnitude", sparsity=0.5, exclude=["fc3"],
                             overrides={"fc2.weight": 0.25})
    out = safetensors_io.loads(result.model)
    original = models.state_arrays(mlp)
    np.testing.assert_array_equal(out["fc3.weight"], original["fc3.weight"])
    assert int((out["fc1.weight"] == 0).sum()) == round(0.5 * out["fc1.weight"].size)
    assert int((out["fc2.weight"] == 0).sum()) == round(0.25 * out["fc2.weight"].size)


def test_rules_apply_first_match_and_leave_unmatched_tensors_alone(client, cnn, cnn_safetensors):
    rules = [{"regex": "^conv1", "method": "magnitude", "sparsity": 0.3, "name": "first-conv"},
             {"regex": "conv", "method": "magnitude", "sparsity": 0.7}]
    result = client.compress(cnn_safetensors, method="", rules=rules)
    out = safetensors_io.loads(result.model)
    original = models.state_arrays(cnn)
    assert int((out["conv1.weight"] == 0).sum()) == round(0.3 * original["conv1.weight"].size)
    assert int((out["conv2.weight"] == 0).sum()) == round(0.7 * original["conv2.weight"].size)
    np.testing.assert_array_equal(out["fc.weight"], original["fc.weight"])
    assert result.tensor("conv1.weight").rule == "first-conv"
    assert result.tensor("conv2.weight").rule == "rule[1]"


def test_progress_events_move_forward_through_the_stages(client, cnn_onnx):
    events = []
    client.compress(cnn_onnx, sparsity=0.5, scope="global", progress=events.append)
    assert events, "no progress events"
    # A job is admitted as its upload starts, waits for a worker, then parses,
    # compresses and serializes (the output streams meanwhile: no stage of its own).
    order = [pb.STAGE_RECEIVING, pb.STAGE_QUEUED, pb.STAGE_PARSING, pb.STAGE_COMPRESSING,
             pb.STAGE_SERIALIZING]
    positions = [order.index(e.stage) for e in events]
    assert positions == sorted(positions), [pb.Stage.Name(e.stage) for e in events]
    assert all(0.0 <= e.fraction <= 1.0 for e in events)
    for a, b in zip(events, events[1:]):
        if a.stage == b.stage:
            assert b.fraction >= a.fraction, (a, b)
