"""Sequential calibration: compress a torch model one block at a time, each
block calibrated on the inputs of the model whose earlier blocks are already
compressed.

One-shot calibration (bonsai.calibration.calibrate) takes every layer's Gram
matrix XᵀX from the dense model, so each layer is fitted to inputs it will
never see once the layers before it are pruned or quantized. SparseGPT, GPTQ
and llm-compressor instead go block by block (a decoder layer, say): the
calibration batches run through the current model, the block is compressed
against the inputs it really gets, its weights go back into the model, and
the next block sees them. Later blocks then compensate for the errors of
earlier ones.

The server stays model-agnostic: it never sees the model, only one small
safetensors file per block (the block's floating-point state_dict entries,
under their state_dict names) and that block's calibration file, as one
ordinary Compress job. Running the blocks and the torch forward passes is
the client's work, here.

Cost: one calibration forward pass of the whole model over the batches per
block (so about `len(blocks)` times the one-shot pass), plus one job per
block. Within a block every layer is calibrated with the block's own layers
still dense (as SparseGPT's reference code does without "true sequential").
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from bonsai import calibration, safetensors_io
from bonsai.errors import BonsaiError
from bonsai.parallel import merge_reports
from bonsai.results import CompressResult
from bonsai.v1 import compressor_pb2 as pb

# A block: a torch module of the model (e.g. model.layers[3], a ModuleList), a
# module-name prefix ("model.layers.3"), or a list of either.
Block = Union[str, "object", Sequence[Union[str, "object"]]]

# Compress arguments that would make the output something other than the
# block's tensors, densely stored, in one file: the helper loads it back
# into torch, so it manages these itself.
_MANAGED = ("calibration", "output", "output_path", "parallel", "quantized_layout", "model")


@dataclasses.dataclass
class BlockRun:
    """One block's job. Seconds: the calibration forward pass, the Compress
    call (upload to last byte), and writing the block and loading it back;
    calibration_cpu_seconds is the pass's CPU time in this process, which
    other load on the machine does not inflate."""

    index: int
    tensors: List[str]          # state_dict names sent, in state_dict order
    calibrated: List[str]       # weights with a Gram matrix in the block's calibration file
    skipped: Dict[str, str]     # the block's weights without one, and why (collect_gram)
    calibration_seconds: float = 0.0
    calibration_cpu_seconds: float = 0.0
    job_seconds: float = 0.0
    io_seconds: float = 0.0
    report: Optional[pb.CompressionReport] = None

    @property
    def seconds(self) -> float:
        return self.calibration_seconds + self.job_seconds + self.io_seconds


@dataclasses.dataclass
class SequentialResult(CompressResult):
    """A CompressResult whose `report` merges the block jobs' reports (tensor
    rows in block order; totals summed over the block files, so `params`
    counts the blocks' tensors only; `timings.total_seconds` is the wall time
    of the whole run), with each block's own run in `blocks`. The compressed
    weights are in the torch model; `model` stays None."""

    blocks: List[BlockRun] = dataclasses.field(default_factory=list)


class BlockFailed(BonsaiError):
    """A block's job failed on the server: the server's code, its message
    prefixed with the block, `block` its index; the BonsaiError is __cause__.
    Blocks before it are already compressed in the model."""

    def __init__(self, block: int, error: BonsaiError):
        super().__init__(error.code, f"block {block}: {error.message} (blocks before {block} are "
                         "already compressed in the model)", hint=error.hint)
        self.block = block


def compress_sequentially(
    client,
    model,
    blocks: Iterable[Block],
    batches: Iterable,
    *,
    method: Optional[str] = None,
    sparsity: Optional[float] = None,
    options=None,
    rules: Iterable = (),
    work_dir: Optional[str] = None,
    device=None,
    on_block: Optional[Callable[[BlockRun, int], None]] = None,
    **compress_kwargs,
) -> SequentialResult:
    """Compresses `model` (a torch nn.Module) in place, block after block.

    For each block in order: runs `batches` through the current model with
    hooks on the block's Linear/Conv layers (bonsai.calibration.collect_gram),
    sends the block's tensors and their Gram matrices as one job to `client`
    (a bonsai.Client) with `method`, `sparsity`, `options` or `rules` (as in
    Client.compress; other keyword arguments such as `include`, `exclude`,
    `scope` or `overrides` go to every job too, and apply within each block),
    and copies the compressed tensors back into the model.

    `blocks`: each a module of `model` (its submodules included: e.g.
    `model.layers[i]`), a module-name prefix (`"model.layers.3"`; matches that
    module and those under it, not `model.layers.30`), or a list of either.
    Blocks must not share a tensor, and each must hold at least one layer
    the helper calibrates. Tensors outside every block (embeddings, the final
    norm, lm_head) are left as they are: to compress them, make them (part
    of) a block. The server's default selection still applies within a
    block (`embed*` and `lm_head` left alone unless `include`d).

    `batches` runs once per block, so it must be re-iterable (a list, not a
    generator). `work_dir`, when given, keeps each block's files
    (`block-000.safetensors` with the weights sent, `block-000.calib.safetensors`);
    otherwise they go to a temporary folder removed at the end. `on_block(run,
    blocks)` is called after each block (a progress hook).

    bfloat16 tensors are sent as float32 and rounded back (numpy has no
    bfloat16); zeros stay zeros, but quantized values are then rounded to
    bfloat16. If a block's job fails, BlockFailed is raised and the model
    holds the blocks before it compressed, the rest dense.
    """
    import torch
    managed = sorted(set(compress_kwargs) & set(_MANAGED))
    if managed:
        raise ValueError(f"compress_sequentially manages {', '.join(managed)} itself (dense output, one "
                         "calibration file per block, loaded back into the model)")
    if iter(batches) is batches:
        raise TypeError("batches must be re-iterable (a list or tuple): they run once per block")
    spec = dict(compress_kwargs, method=method, sparsity=sparsity, options=options, rules=list(rules or ()))
    module_names = _module_names(model)
    resolved = [_resolve_block(model, module_names, b, i) for i, b in enumerate(blocks)]
    if not resolved:
        raise ValueError("no blocks given")
    _check_disjoint([modules for _, modules in resolved])  # every block checked before the first job
    params = dict(model.state_dict(keep_vars=True))
    started = time.monotonic()
    runs: List[BlockRun] = []
    with _work_folder(work_dir) as folder:
        for index, (label, modules) in enumerate(resolved):
            run = _run_block(client, model, params, label, modules, index, batches, spec, folder, device,
                             torch)
            runs.append(run)
            if on_block is not None:
                on_block(run, len(resolved))
    method_name = method or ""
    report = merge_reports([r.report for r in runs], pb.CompressionSpec(method=method_name), [], [],
                           time.monotonic() - started)
    return SequentialResult(report=report, blocks=runs)


def _run_block(client, model, params, label: str, modules: List[str], index: int, batches, spec, folder,
               device, torch) -> BlockRun:
    module_set = set(modules)
    kinds = calibration._kinds()
    owned = dict(model.named_modules())
    layers = [n for n in modules if isinstance(owned[n], kinds)]
    tensors = [k for k, v in params.items()
               if k.rpartition(".")[0] in module_set and torch.is_floating_point(v)]
    t0, cpu0 = time.monotonic(), time.process_time()
    stats = calibration.collect_gram(model, batches, modules=set(layers), device=device)
    calibration_seconds, calibration_cpu_seconds = time.monotonic() - t0, time.process_time() - cpu0
    if not stats:
        raise ValueError(f"block {index} ({label}): no calibration statistics "
                         f"({'; '.join(f'{k}: {why}' for k, why in stats.skipped.items())})")
    t0 = time.monotonic()
    weights_path = os.path.join(folder, f"block-{index:03d}.safetensors")
    calib_path = os.path.join(folder, f"block-{index:03d}.calib.safetensors")
    safetensors_io.write(weights_path, {k: _to_numpy(params[k], torch) for k in tensors})
    calibration.write_calibration(calib_path, stats)
    io_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    try:
        result = client.compress(weights_path, calibration=calib_path, **spec)
    except BonsaiError as e:
        raise BlockFailed(index, e) from e
    job_seconds = time.monotonic() - t0
    t0 = time.monotonic()
    compressed = safetensors_io.loads(result.model)
    with torch.no_grad():
        for k in tensors:
            target = params[k]
            value = torch.from_numpy(np.ascontiguousarray(compressed[k]))
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"block {index}: {k} came back as {tuple(value.shape)}, the model holds "
                                 f"{tuple(target.shape)}; the helper needs shape-preserving output")
            target.copy_(value.to(dtype=target.dtype, device=target.device))
    io_seconds += time.monotonic() - t0
    return BlockRun(index=index, tensors=tensors, calibrated=list(stats), skipped=dict(stats.skipped),
                    calibration_seconds=calibration_seconds, calibration_cpu_seconds=calibration_cpu_seconds,
                    job_seconds=job_seconds, io_seconds=io_seconds,
                    report=result.report)


def _to_numpy(tensor, torch) -> np.ndarray:
    t = tensor.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy()


def _module_names(model) -> Dict[int, str]:
    names: Dict[int, str] = {}
    for name, m in model.named_modules():
        names.setdefault(id(m), name)
    return names


def _resolve_block(model, module_names: Dict[int, str], block, index: int) -> Tuple[str, List[str]]:
    """(the block as the errors name it, the names of its modules in model order)."""
    items = [block] if isinstance(block, str) or not isinstance(block, (list, tuple)) else list(block)
    prefixes = []
    for item in items:
        if isinstance(item, str):
            prefixes.append(item.rstrip("."))
        elif id(item) in module_names:
            prefixes.append(module_names[id(item)])
        else:
            raise ValueError(f"block {index}: {type(item).__name__} is not a module of the model (give a "
                             "submodule of the model or a module-name prefix)")
    modules = [(n, m) for n, m in model.named_modules()
               if any(p == "" or n == p or n.startswith(p + ".") for p in prefixes)]
    if not modules:
        raise ValueError(f"block {index}: no module of the model is named {_describe(prefixes)} or lies under it")
    if not any(isinstance(m, calibration._kinds()) for _, m in modules):
        raise ValueError(f"block {index} ({_describe(prefixes)}) holds no Linear, Conv or ConvTranspose layer "
                         "to calibrate")
    return _describe(prefixes), [n for n, _ in modules]


def _check_disjoint(blocks: List[List[str]]) -> None:
    owner: Dict[str, int] = {}
    for i, modules in enumerate(blocks):
        for n in modules:
            if n in owner:
                raise ValueError(f"blocks {owner[n]} and {i} share module '{n}': each tensor is compressed once")
            owner[n] = i


def _describe(names: Sequence[str]) -> str:
    shown = ", ".join(f"'{n}'" if n else "the whole model" for n in list(names)[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


class _work_folder:
    """The caller's folder (kept), or a temporary one (removed)."""

    def __init__(self, path: Optional[str]):
        self.path = path
        self.temp: Optional[tempfile.TemporaryDirectory] = None

    def __enter__(self) -> str:
        if self.path is not None:
            os.makedirs(self.path, exist_ok=True)
            return self.path
        self.temp = tempfile.TemporaryDirectory(prefix="bonsai-sequential-")
        return self.temp.name

    def __exit__(self, *exc) -> None:
        if self.temp is not None:
            self.temp.cleanup()
