"""Structured pruning in physical mode: the ONNX graph really shrinks and still runs.

Models come from torch: an MLP; a CNN with BatchNormalization and a residual
block, and a small ResNet whose strided block has a Conv on its skip, each
exported twice (BatchNormalization kept as its own node, and in eval mode
where the exporter folds it into the convolutions); a MobileNetV2 inverted
residual with a depthwise convolution; a transformer feed-forward block. The
server removes half of every prunable group's channels.

What the pruned model must compute: exactly the original model with the
removed channels' input weights zeroed in every consumer. That is the honest
reference: zeroing only the producers' weights ("mask" mode) is a different
model whenever a removed channel still emits a constant (its bias, the
BatchNormalization shift). The removed channels are recovered from the output
itself: every kept weight value is copied unchanged, so each one points back
to its place in the original.
"""
from __future__ import annotations

import io
import os

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

import bonsai
import ort_runner
from models import MLP, build_mlp, to_safetensors
from server_process import server_binary

FRACTION = 0.5
OPTIONS = {"norm": "l2", "structured_mode": "physical"}


@pytest.fixture(scope="module", autouse=True)
def runtime():
    if not os.path.exists(server_binary()):
        pytest.skip(f"no bonsai-server at {server_binary()}; set BONSAI_SERVER or build it")
    try:
        ort_runner.check_runtime()
    except ort_runner.RuntimeMissing as err:
        pytest.fail(str(err))  # a broken test machine, not a reason to skip


# ---------------------------------------------------------------- models

class ResidualCNN(nn.Module):
    """stem -> residual block (conv-bn-relu-conv-bn + skip) -> strided conv -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        s = self.stem(x)
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(s))))) + s)
        y = self.down(y)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class MobileBlockCNN(nn.Module):
    """Inverted residual as in MobileNetV2: expand 1x1, depthwise 3x3, project 1x1, + skip."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False),
                                       nn.BatchNorm2d(32), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(32, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        s = self.stem(x)
        y = self.project(self.depthwise(self.expand(s))) + s
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class BasicBlock(nn.Module):
    """ResNet's basic block; a strided one has a 1x1 Conv + BatchNorm on the skip."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class SmallResNet(nn.Module):
    """Residual stages where the strided block's skip Conv joins the next block's channels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.layers(self.stem(x)), 1), 1))


class TransformerMLP(nn.Module):
    """A transformer's feed-forward block on [batch, tokens, features]: MatMul + Add, GELU, skip."""

    def __init__(self):
        super().__init__()
        self.ln, self.fc1, self.fc2 = nn.LayerNorm(32), nn.Linear(32, 128), nn.Linear(128, 32)
        self.head = nn.Linear(32, 5)

    def forward(self, x):
        return self.head(x + self.fc2(nn.functional.gelu(self.fc1(self.ln(x)))))


def _randomized(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNormalization statistics, so no layer is an identity."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) / p[0].numel() ** 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def export(model: nn.Module, input_shape, keep_batchnorm: bool) -> bytes:
    # PRESERVE keeps the model's eval mode but skips the eval-mode peephole
    # that folds BatchNormalization into the preceding Conv.
    kwargs = (dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
              if keep_batchnorm else dict(training=torch.onnx.TrainingMode.EVAL, do_constant_folding=True))
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(input_shape), buffer, opset_version=13,
                      input_names=["input"], output_names=["output"], **kwargs)
    return buffer.getvalue()


CASES = {
    "mlp": (lambda: _randomized(MLP(), 1), (4, 32), False),
    "cnn_batchnorm_kept": (lambda: _randomized(ResidualCNN(), 2), (2, 3, 16, 16), True),
    "cnn_batchnorm_folded": (lambda: _randomized(ResidualCNN(), 2), (2, 3, 16, 16), False),
    "depthwise_batchnorm_kept": (lambda: _randomized(MobileBlockCNN(), 3), (2, 3, 12, 12), True),
    "resnet_batchnorm_kept": (lambda: _randomized(SmallResNet(), 4), (2, 3, 16, 16), True),
    "resnet_batchnorm_folded": (lambda: _randomized(SmallResNet(), 4), (2, 3, 16, 16), False),
    "transformer_mlp": (lambda: _randomized(TransformerMLP(), 5), (2, 6, 32), False),
}


# ---------------------------------------------------------------- reference

def _initializers(model: onnx.ModelProto) -> dict:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _weight_name(model: onnx.ModelProto, name: str) -> str:
    """The initializer behind `name`, also when read through Identity."""
    producers = {o: n for n in model.graph.node for o in n.output}
    while name in producers and producers[name].op_type == "Identity":
        name = producers[name].input[0]
    return name


def kept_indices(original: np.ndarray, pruned: np.ndarray, axis: int) -> list:
    """Which original indices along `axis` the pruned tensor kept, from its values."""
    places = {}
    for index, value in np.ndenumerate(original):
        places.setdefault(value.item(), []).append(index)
    kept = [None] * pruned.shape[axis]
    for index, value in np.ndenumerate(pruned):
        found = places.get(value.item(), [])
        if len(found) == 1:
            kept[index[axis]] = found[0][axis]
    assert None not in kept, "a kept channel's values are not in the original"
    return kept


def _input_axis(node: onnx.NodeProto) -> int:
    """Axis of the weight (input 1) that runs over the node's input channels."""
    if node.op_type == "Conv":
        return 1
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 1 if node.op_type == "Gemm" and trans_b else 0


def consumer_masked_reference(original_bytes: bytes, pruned_bytes: bytes) -> bytes:
    """The original with every consumer's removed input channels zeroed."""
    original, pruned = onnx.load_from_string(original_bytes), onnx.load_from_string(pruned_bytes)
    before, after = _initializers(original), _initializers(pruned)
    masked = dict(before)
    for node in original.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        name = _weight_name(original, node.input[1])
        if name not in before or before[name].ndim < 2:
            continue
        axis = _input_axis(node)
        if after[name].shape[axis] == before[name].shape[axis]:
            continue
        removed = sorted(set(range(before[name].shape[axis])) - set(kept_indices(before[name], after[name], axis)))
        weight = masked[name].copy()
        np.moveaxis(weight, axis, 0)[removed] = 0
        masked[name] = weight
    for tensor in original.graph.initializer:
        tensor.CopyFrom(numpy_helper.from_array(masked[tensor.name], tensor.name))
    return original.SerializeToString()


def check_physically_pruned(original_bytes: bytes, pruned_bytes: bytes, input_shape) -> None:
    pruned = onnx.load_from_string(pruned_bytes)
    onnx.checker.check_model(pruned, full_check=True)
    original = onnx.load_from_string(original_bytes)
    before, after = _initializers(original), _initializers(pruned)
    params_before = sum(a.size for a in before.values())
    params_after = sum(a.size for a in after.values())
    assert params_after < 0.6 * params_before, "half the channels should take most parameters with them"
    # The file shrinks by the removed parameters' bytes; names and nodes stay.
    removed_bytes = 4 * (params_before - params_after)
    assert len(original_bytes) - len(pruned_bytes) == pytest.approx(removed_bytes, rel=0.02)

    x = np.random.default_rng(5).standard_normal(input_shape).astype(np.float32)
    got = ort_runner.run_onnx(pruned_bytes, {"input": x})["output"]
    want = ort_runner.run_onnx(consumer_masked_reference(original_bytes, pruned_bytes), {"input": x})["output"]
    dense = ort_runner.run_onnx(original_bytes, {"input": x})["output"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, dense, rtol=1e-3, atol=1e-4), "pruning changed nothing"


def check_lowest_l2_norms_removed(original_bytes: bytes, pruned_bytes: bytes, names) -> None:
    """Producers in a group of their own lose their lowest-norm output channels."""
    before = _initializers(onnx.load_from_string(original_bytes))
    after = _initializers(onnx.load_from_string(pruned_bytes))
    for name, out_axis in names:
        w = np.moveaxis(before[name], out_axis, 0)
        norms = np.sqrt((w.reshape(w.shape[0], -1).astype(np.float64) ** 2).sum(axis=1))
        kept = kept_indices(before[name], after[name], out_axis)
        expected = sorted(np.argsort(norms, kind="stable")[round(FRACTION * len(norms)):])
        assert kept == expected, name


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("case", sorted(CASES))
def test_physical_pruning_shrinks_graph_and_matches_consumer_masked_model_in_onnxruntime(client, case):
    build, input_shape, keep_batchnorm = CASES[case]
    original = export(build(), input_shape, keep_batchnorm)
    if keep_batchnorm:
        assert any(n.op_type == "BatchNormalization" for n in onnx.load_from_string(original).graph.node)
    result = client.compress(original, method="structured", sparsity=FRACTION, options=OPTIONS)
    check_physically_pruned(original, result.model, input_shape)
    totals = result.report.totals
    removed = (sum(a.size for a in _initializers(onnx.load_from_string(original)).values())
               - sum(a.size for a in _initializers(onnx.load_from_string(result.model)).values()))
    assert totals.params - totals.params_after == removed
    assert 0 < totals.macs_after < totals.macs_before


def test_each_neuron_group_loses_its_lowest_l2_norm_neurons(client):
    build, input_shape, _ = CASES["mlp"]
    original = export(build(), input_shape, False)
    result = client.compress(original, method="structured", sparsity=FRACTION, options=OPTIONS)
    # torch exports Linear as Gemm with transB=1: weights are [out, in].
    check_lowest_l2_norms_removed(original, result.model, [("fc1.weight", 0), ("fc2.weight", 0)])
    shapes = {t.name: list(t.shape_after) for t in result.report.tensors if t.shape_after}
    assert shapes.get("fc1.weight") == [32, 32]
    assert shapes.get("fc2.weight") == [24, 32]


def _near_tie_model() -> bytes:
    """x -> MatMul w1 -> Relu -> MatMul w2 -> Relu -> MatMul w3 -> y.

    Four output channels of w1 and of w2 have L2 norms 1 + eps^2/2 with eps
    <= 3e-4: the same float32 (1.0), different float64s. The values that
    tell them apart sit in rows that survive the cut of the layer before, so
    every kept column can be found again in the original.
    """
    w1 = np.zeros((8, 6), np.float32)
    w1[0] = [1, 1, 1, 1, 5, 5]
    w1[1] = [3e-4, 1e-4, 2.5e-4, 2e-4, 1e-4, 2e-4]
    w2 = np.zeros((6, 6), np.float32)
    w2[0] = [5, 5, 1, 1, 1, 1]
    w2[4] = [1e-4, 2e-4, 3e-4, 1e-4, 2.5e-4, 2e-4]
    w3 = np.random.default_rng(7).standard_normal((6, 4)).astype(np.float32)
    nodes = [onnx.helper.make_node("MatMul", ["x", "w1"], ["h1"]),
             onnx.helper.make_node("Relu", ["h1"], ["a1"]),
             onnx.helper.make_node("MatMul", ["a1", "w2"], ["h2"]),
             onnx.helper.make_node("Relu", ["h2"], ["a2"]),
             onnx.helper.make_node("MatMul", ["a2", "w3"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes, "near_tie",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 8])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, name) for name, w in (("w1", w1), ("w2", w2), ("w3", w3))])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _removed_columns(original: np.ndarray, pruned: np.ndarray, rows) -> list:
    """Output channels (columns) of a MatMul weight that physical mode removed,
    found by matching each kept column against the original on the kept rows."""
    kept = []
    for j in range(pruned.shape[1]):
        matches = [c for c in range(original.shape[1]) if np.array_equal(original[rows, c], pruned[:, j])]
        assert len(matches) == 1, f"kept column {j} is not one original column"
        kept.append(matches[0])
    return sorted(set(range(original.shape[1])) - set(kept))


def test_mask_and_physical_mode_remove_the_same_channels_even_where_float_norms_tie(client):
    original = _near_tie_model()
    weights = _initializers(onnx.load_from_string(original))
    # The reference: float64 L2 norms, lowest first, ties to the lower index.
    expected = {}
    for name in ("w1", "w2"):
        norms = np.sqrt((weights[name].astype(np.float64) ** 2).sum(axis=0))
        expected[name] = sorted(np.argsort(norms, kind="stable")[:3].tolist())
        in_float = sorted(np.argsort(norms.astype(np.float32), kind="stable")[:3].tolist())
        assert in_float != expected[name], "the model must hold float32 ties"
    assert expected == {"w1": [1, 2, 3], "w2": [3, 4, 5]}

    masked = client.compress(original, method="structured", sparsity=FRACTION, options={"norm": "l2"})
    after_mask = _initializers(onnx.load_from_string(masked.model))
    for name in ("w1", "w2"):
        zeroed = [c for c in range(6) if not after_mask[name][:, c].any()]
        assert zeroed == expected[name], name

    physical = client.compress(original, method="structured", sparsity=FRACTION, options=OPTIONS)
    after = _initializers(onnx.load_from_string(physical.model))
    assert _removed_columns(weights["w1"], after["w1"], list(range(8))) == expected["w1"]
    w1_kept = [c for c in range(6) if c not in expected["w1"]]
    assert _removed_columns(weights["w2"], after["w2"], w1_kept) == expected["w2"]
    assert after["w3"].shape == (3, 4)  # the head keeps its outputs; its inputs follow w2


def test_physical_mode_on_safetensors_is_refused_with_the_mode_that_works(client):
    with pytest.raises(bonsai.InvalidArgument) as err:
        client.compress(to_safetensors(build_mlp()), method="structured",
                        sparsity=FRACTION, options=OPTIONS)
    assert "needs an ONNX model" in str(err.value)
    assert "structured_mode MASK" in str(err.value)
