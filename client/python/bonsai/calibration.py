"""Calibration statistics for wanda and sparsegpt, collected from a torch model.

The server needs, for every weight it prunes with a calibration method, the
Gram matrix H = XᵀX of that layer's inputs over some real data, and how many
input rows went into it. This module runs a few batches through the model
with forward hooks on nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d and
nn.ConvTranspose2d and writes a safetensors file:

    <weight name>.gram     F32 [d, d]   d = the weight's reduction length
    <weight name>.samples  I64 [1]      input rows accumulated

d is in_features for Linear and in_channels/groups * kh * kw for a Conv: the
input is unfolded (torch.nn.functional.unfold; a Conv1d is a Conv2d of height
1) so that its columns line up with weight.reshape(out, -1), which is how the
server flattens a Conv weight. Grouped convolutions stack the rows of every
group into one H (each group really has its own; for depthwise layers prefer
to exclude them). A ConvTranspose is the direct convolution of its input
spread out by the stride, with the kernel flipped: its rows are that
convolution's, with the kernel axes flipped back, so that their columns line
up with the weight [in, out, kh, kw] as the server reads a ConvTranspose
weight in ONNX (in * kh * kw long; a safetensors file does not say that a
weight belongs to a ConvTranspose, so there the server reads it as a Conv).

Layers the helper cannot take statistics for are listed with the reason in
the result's `skipped` ({weight name: why}): other layer types with a
weight (embeddings take token ids, not activations), grouped transposed
convolutions, and layers the batches never ran through.

Weight names are the model's state_dict keys (`<module>.weight`), which are
the tensor names of a safetensors file saved from that state_dict. For ONNX,
torch.onnx.export(..., export_params=True) keeps those names as initializer
names for Gemm and Conv weights, but constant folding may give a weight a new
name such as `onnx::MatMul_123` (e.g. a Linear applied to a 3-D input becomes
MatMul with a folded transpose). `onnx_name_map` finds the initializer of each
weight by name, or else by value (as stored or transposed), and
`write_calibration(..., name_map=...)` writes the statistics under those
names. H is the same whichever way the weight is stored, since the reduction
axis does not change.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Collection, Dict, Iterable, Mapping, Optional

import numpy as np

from bonsai import safetensors_io


@dataclasses.dataclass
class GramStats:
    gram: np.ndarray  # float64 [d, d], summed over samples
    samples: int


def _conv_rows(module, x):
    """Conv1d/Conv2d input [N, C, (H,) W] -> rows [N * L * groups, C/groups * k]."""
    import torch.nn as nn
    import torch.nn.functional as F
    one_d = isinstance(module, nn.Conv1d)
    padding = module.padding
    if module.padding_mode != "zeros":
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0
    elif padding == "valid":
        padding = 0
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for d, k in zip(module.dilation, module.kernel_size))
    return _unfold_rows(x, module.kernel_size, module.dilation, padding, module.stride, module.groups, one_d)


def _pair(value, one_d, dummy):
    """A 2-D layer's (height, width) parameter; a 1-D layer's gets `dummy` as height."""
    value = tuple(value) if isinstance(value, (tuple, list)) else (value,) * (1 if one_d else 2)
    return (dummy, value[0]) if one_d else value


def _unfold_rows(x, kernel, dilation, padding, stride, groups, one_d):
    import torch.nn.functional as F
    if one_d:  # [N, C, W] as [N, C, 1, W]
        x = x.unsqueeze(2)
        kernel, dilation, stride = (1, kernel[0]), (1, dilation[0]), (1, stride[0])
        padding = (0, padding[0] if isinstance(padding, (tuple, list)) else padding)
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    n, ckk, length = cols.shape
    cols = cols.reshape(n, groups, ckk // groups, length)  # channels are the outer factor of ckk
    return cols.permute(0, 1, 3, 2).reshape(-1, ckk // groups)


def _conv_transpose_rows(module, x):
    """ConvTranspose1d/2d input -> rows [N * L, C * k] in the weight's (c, ky, kx) order.

    The transposed convolution is the direct one over the input spread out by
    the stride (stride - 1 zeros between elements) and padded by
    dilation * (k - 1) - padding (plus output_padding at the end), with the
    kernel flipped; its unfolded rows, kernel axes flipped back, are the rows
    each output position's weights multiply.
    """
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    one_d = isinstance(module, nn.ConvTranspose1d)
    if one_d:
        x = x.unsqueeze(2)
    kernel = _pair(module.kernel_size, one_d, 1)
    stride, dilation = _pair(module.stride, one_d, 1), _pair(module.dilation, one_d, 1)
    padding, extra = _pair(module.padding, one_d, 0), _pair(module.output_padding, one_d, 0)
    n, c, h, w = x.shape
    spread = x.new_zeros(n, c, (h - 1) * stride[0] + 1, (w - 1) * stride[1] + 1)
    spread[:, :, ::stride[0], ::stride[1]] = x
    pads = []
    for axis in (1, 0):  # F.pad takes the last axis first
        before = dilation[axis] * (kernel[axis] - 1) - padding[axis]
        pads += [before, before + extra[axis]]
    spread = F.pad(spread, pads)  # negative padding crops
    cols = F.unfold(spread, kernel, dilation=dilation)
    _, ckk, length = cols.shape
    cols = cols.reshape(n, c, kernel[0], kernel[1], length)
    cols = torch.flip(cols, dims=(2, 3))
    return cols.permute(0, 4, 1, 2, 3).reshape(n * length, ckk)


class GramCollection(dict):
    """{weight name: GramStats}, and `skipped`: {weight name: why it has none}."""

    def __init__(self, stats, skipped):
        super().__init__(stats)
        self.skipped: Dict[str, str] = skipped


def _kinds():
    import torch.nn as nn
    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)


def _unsupported(module) -> Optional[str]:
    import torch.nn as nn
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d)) and module.groups != 1:
        return f"{type(module).__name__} with groups={module.groups}: not supported, leave it out of calibration"
    return None


def collect_gram(model, batches: Iterable, *, module_types=None, device=None,
                 modules: Optional[Collection[str]] = None) -> GramCollection:
    """Runs `batches` through `model` and returns {"<module>.weight": GramStats},
    with `.skipped` naming every other weight of rank >= 2 and why.

    A batch is a tensor, a tuple/list of positional arguments, or a dict of
    keyword arguments. The model is put in eval mode; nothing is trained.
    `modules` (names as in `model.named_modules()`) limits the statistics,
    and `.skipped`, to those modules; the whole model still runs.
    """
    import torch
    import torch.nn as nn
    module_types = tuple(module_types or _kinds())
    sums: Dict[str, "torch.Tensor"] = {}
    counts: Dict[str, int] = {}
    skipped: Dict[str, str] = {}

    def hook_for(name: str, module):
        def hook(mod, inputs, _output):
            x = inputs[0].detach()
            if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
                batched = x if x.dim() == (3 if isinstance(mod, nn.ConvTranspose1d) else 4) else x.unsqueeze(0)
                rows = _conv_transpose_rows(mod, batched)
            elif isinstance(mod, (nn.Conv1d, nn.Conv2d)):
                batched = x if x.dim() == (3 if isinstance(mod, nn.Conv1d) else 4) else x.unsqueeze(0)
                rows = _conv_rows(mod, batched)
            else:
                rows = x.reshape(-1, x.shape[-1])
            rows = rows.to(torch.float64)
            gram = rows.T @ rows
            key = f"{name}.weight"
            sums[key] = sums[key] + gram if key in sums else gram
            counts[key] = counts.get(key, 0) + rows.shape[0]
        return hook

    def wanted(name: str) -> bool:
        return modules is None or name in modules

    handles = []
    for name, m in model.named_modules():
        if not wanted(name):
            continue
        weight = getattr(m, "weight", None)
        key = f"{name}.weight"
        if isinstance(m, module_types) and _unsupported(m) is None:
            handles.append(m.register_forward_hook(hook_for(name, m)))
        elif isinstance(m, module_types):
            skipped[key] = _unsupported(m)
        elif isinstance(weight, torch.Tensor) and weight.dim() >= 2:
            skipped[key] = (f"{type(m).__name__}: its input is not activations a weight multiplies"
                            if isinstance(m, (nn.Embedding, nn.EmbeddingBag))
                            else f"{type(m).__name__} is not a layer type the helper knows")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                if isinstance(batch, Mapping):
                    model(**{k: _to(v, device) for k, v in batch.items()})
                elif isinstance(batch, (tuple, list)):
                    model(*[_to(v, device) for v in batch])
                else:
                    model(_to(batch, device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    for name, m in model.named_modules():
        key = f"{name}.weight"
        if wanted(name) and isinstance(m, module_types) and key not in sums and key not in skipped:
            skipped[key] = "the batches never ran through this layer"
    return GramCollection({k: GramStats(sums[k].cpu().numpy(), counts[k]) for k in sums}, skipped)


def _to(value, device):
    return value.to(device) if device is not None and hasattr(value, "to") else value


def onnx_name_map(onnx_model, torch_model) -> Dict[str, str]:
    """Maps state_dict weight names to the ONNX initializer that holds them.

    `onnx_model` is an onnx.ModelProto, bytes or a path. Names that survive
    export map to themselves; renamed weights are found by value (as stored
    or transposed). Weights with no initializer (e.g. folded into another
    constant) are left out.
    """
    import onnx
    from onnx import numpy_helper
    if isinstance(onnx_model, (bytes, bytearray)):
        onnx_model = onnx.load_from_string(bytes(onnx_model))
    elif isinstance(onnx_model, (str, os.PathLike)):
        onnx_model = onnx.load(os.fspath(onnx_model))
    initializers = {i.name: i for i in onnx_model.graph.initializer}
    state = {k: v.detach().cpu().numpy() for k, v in torch_model.state_dict().items() if k.endswith("weight")}
    result: Dict[str, str] = {}
    unmatched = []
    for name in state:
        if name in initializers:
            result[name] = name
        else:
            unmatched.append(name)
    taken = set(result.values())
    for name in unmatched:
        weight = state[name]
        for init_name, init in initializers.items():
            if init_name in taken or tuple(init.dims) not in (weight.shape, weight.T.shape):
                continue
            values = numpy_helper.to_array(init)
            if (values.shape == weight.shape and np.array_equal(values, weight)) or \
               (weight.ndim == 2 and values.shape == weight.T.shape and np.array_equal(values, weight.T)):
                result[name] = init_name
                taken.add(init_name)
                break
    return result


def write_calibration(destination, stats: Mapping[str, GramStats],
                      name_map: Optional[Mapping[str, str]] = None) -> None:
    """Writes the statistics as safetensors; `name_map` renames weights (ONNX).

    With a name map, weights missing from it are left out (they have no
    tensor of that name in the model). Weights whose layers read the same
    input (q/k/v projections, gate/up) have equal statistics: the file holds
    them once, and the others name it with a `<weight>.gram_of` metadata
    entry, so the upload is not three times larger.
    """
    tensors = {}
    metadata = {"format": "bonsai-calibration", "version": "1"}
    written = []  # (name, gram, samples) stored so far
    for name, s in stats.items():
        if name_map is not None:
            if name not in name_map:
                continue
            name = name_map[name]
        gram = np.asarray(s.gram, dtype=np.float32)
        same = next((other for other, g, n in written
                     if n == s.samples and g.shape == gram.shape and np.array_equal(g, gram)), None)
        if same is not None:
            metadata[f"{name}.gram_of"] = same
            continue
        tensors[f"{name}.gram"] = gram
        tensors[f"{name}.samples"] = np.array([s.samples], dtype=np.int64)
        written.append((name, gram, s.samples))
    safetensors_io.write(destination, tensors, metadata=metadata)


def calibrate(model, batches: Iterable, destination, *, onnx_model=None, **kwargs) -> Dict[str, GramStats]:
    """collect_gram + write_calibration; with `onnx_model`, names follow its initializers."""
    stats = collect_gram(model, batches, **kwargs)
    name_map = onnx_name_map(onnx_model, model) if onnx_model is not None else None
    write_calibration(destination, stats, name_map)
    return stats
