"""Small torch models with tie-free weights, as safetensors and ONNX bytes.

Magnitude pruning is only comparable with torch's when no two weights share a
magnitude (ties are broken differently), so the weights are redrawn until
every |w| of the model is distinct.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

from bonsai import safetensors_io

OPSET = 13


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 48)
        self.fc3 = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.flatten(1))


def prunable_names(model: nn.Module) -> list:
    """Weights bonsai selects by default: the rank >= 2 weights."""
    return [k for k, v in model.state_dict().items() if v.dim() >= 2]


def _tie_free(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(100):
        with torch.no_grad():
            for i, (name, p) in enumerate(model.named_parameters()):
                # Layers at different scales, so global pruning is not uniform.
                scale = (0.3, 1.0, 0.1, 0.6, 2.0)[i // 2 % 5] / p[0].numel() ** 0.5
                p.copy_(torch.randn(p.shape, generator=generator) * scale)
        mags = np.concatenate([p.detach().abs().numpy().ravel() for p in model.parameters()])
        if len(np.unique(mags)) == mags.size:
            return model.eval()
    raise RuntimeError("could not draw tie-free weights")


def build_mlp(seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    return _tie_free(MLP(), seed)


def build_cnn(seed: int = 1) -> CNN:
    torch.manual_seed(seed)
    return _tie_free(CNN(), seed)


MLP_INPUT = (4, 32)
CNN_INPUT = (2, 3, 16, 16)


def state_arrays(model: nn.Module) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def to_safetensors(model: nn.Module) -> bytes:
    return safetensors_io.dumps(state_arrays(model))


def to_onnx(model: nn.Module, input_shape) -> bytes:
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(input_shape), buffer, opset_version=OPSET, export_params=True,
                      input_names=["input"], output_names=["output"])
    return buffer.getvalue()


def onnx_initializers(model_bytes: bytes) -> dict:
    model = onnx.load_from_string(model_bytes)
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def constant_and_if_model(seed: int = 2):
    """A graph whose weights live in a Constant node and inside an If branch.

    y = If(cond, then: (x @ W_then), else: (x @ W_else)) where x = input @ W_const
    and W_const comes from a Constant node, not an initializer. Returns the
    model bytes and the three weights by their tensor names.
    """
    rng = np.random.default_rng(seed)
    w_const = rng.standard_normal((8, 16)).astype(np.float32)
    w_then = rng.standard_normal((16, 4)).astype(np.float32)
    w_else = rng.standard_normal((16, 4)).astype(np.float32) * 0.5
    const_node = helper.make_node("Constant", [], ["w_const"], value=numpy_helper.from_array(w_const, "w_const"))
    first = helper.make_node("MatMul", ["input", "w_const"], ["hidden"])

    def branch(name, weight):
        node = helper.make_node("MatMul", ["hidden", f"w_{name}"], [f"out_{name}"])
        return helper.make_graph([node], f"{name}_branch", [],
                                 [helper.make_tensor_value_info(f"out_{name}", TensorProto.FLOAT, [None, 4])],
                                 initializer=[numpy_helper.from_array(weight, f"w_{name}")])

    if_node = helper.make_node("If", ["cond"], ["output"], then_branch=branch("then", w_then),
                               else_branch=branch("else", w_else))
    graph = helper.make_graph(
        [const_node, first, if_node], "constant_and_if",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8]),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model.SerializeToString(), {"w_const": w_const, "w_then": w_then, "w_else": w_else}


def onnx_tensors_everywhere(model_bytes: bytes) -> dict:
    """Every float tensor of an ONNX model: initializers, Constant nodes, subgraphs."""
    found = {}

    def visit(graph):
        for init in graph.initializer:
            found[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            for attr in node.attribute:
                if node.op_type == "Constant" and attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for g in attr.graphs:
                    visit(g)
    visit(onnx.load_from_string(model_bytes).graph)
    return found
