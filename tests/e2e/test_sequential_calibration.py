"""bonsai.sequential compresses a torch model block by block, each block
calibrated on the inputs of the model whose earlier blocks are compressed,
one real job per block."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from bonsai import calibration, safetensors_io, sequential

D_IN, D_HIDDEN = 24, 32

# Unit roundoffs and Higham's gamma_n = n*u/(1-n*u): the bound on the relative
# error of any n-term sum of products in that precision, in any order.
U32, U64 = 2.0**-24, 2.0**-53


def _gamma(n, u):
    return n * u / (1 - n * u)


class Block2(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc2 = nn.Linear(D_HIDDEN, D_HIDDEN)
        self.fc3 = nn.Linear(D_HIDDEN, D_HIDDEN)

    def forward(self, x):
        return torch.relu(self.fc3(torch.relu(self.fc2(x))))


class TwoBlocks(nn.Module):
    """blocks.0 = fc1 + relu, blocks.1 = fc2, relu, fc3, relu; `head` outside both."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(D_IN, D_HIDDEN), nn.ReLU()), Block2()])
        self.head = nn.Linear(D_HIDDEN, 4)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def _batches(count=4, rows=48):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(rows, D_IN, generator=g) for _ in range(count)]


def _state_bytes(model):
    return {k: v.detach().numpy().tobytes() for k, v in model.state_dict().items()}


def _run(client, model, tmp_path=None, **kwargs):
    kwargs.setdefault("method", "sparsegpt")
    kwargs.setdefault("sparsity", 0.5)
    return sequential.compress_sequentially(client, model, list(model.blocks), _batches(),
                                            work_dir=str(tmp_path) if tmp_path else None, **kwargs)


# ---------------------------------------------------------------- rounding bounds

def _linear_bound(w, b, x, dx):
    """y = x·Wᵀ + b, which torch computes in float32 from an input within dx of
    x: returns (y as computed here in float64, a bound on the difference of the
    two). The float32 sum is within gamma(u32) of its exact value and this
    float64 one within gamma(u64), in any order; the float32 side's |input|
    is at most |x| + dx."""
    aw = np.abs(w)
    y = x @ w.T + b
    n = w.shape[1] + 1
    bound = dx @ aw.T + (_gamma(n, U32) + _gamma(n, U64)) * ((np.abs(x) + dx) @ aw.T + np.abs(b))
    return y, bound


def _gram_bound(h, dh):
    """Bound on |Σ ĥ_i ĥ_j - Σ h_i h_j| when |ĥ - h| <= dh elementwise and both
    sums run in float64 (gamma_n(u64) of Σ|h_i||h_j| each)."""
    ah = np.abs(h)
    mixed = dh.T @ ah + ah.T @ dh + dh.T @ dh
    big = ah + dh
    return (1 + _gamma(len(h), U64)) * mixed + 2 * _gamma(len(h), U64) * (big.T @ big)


def _assert_gram_within(got, want, bound, what):
    excess = np.abs(got - want) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert (excess <= 0).all(), (f"{what}: |got - want| exceeds the rounding bound at {worst}: "
                                 f"{abs(got - want)[worst]:.3g} > {bound[worst]:.3g}")


def _arrays(linear):
    return (linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy())


# ---------------------------------------------------------------- tests

def test_block_two_is_calibrated_on_the_outputs_of_compressed_block_one(client, tmp_path):
    dense = TwoBlocks().eval()
    model = copy.deepcopy(dense)
    result = _run(client, model, tmp_path)
    assert [b.calibrated for b in result.blocks] == [["blocks.0.0.weight"],
                                                     ["blocks.1.fc2.weight", "blocks.1.fc3.weight"]]
    got = safetensors_io.load(tmp_path / "block-001.calib.safetensors")

    # Independently: block 1 with the weights the helper left in the model
    # (compressed), block 2 as it was when block 2 was calibrated (dense),
    # every activation in float64 from the float32 weights, with the bound on
    # what float32 evaluation (the hooks' torch forward, per batch) can differ.
    x = torch.cat(_batches()).double().numpy()
    w1, b1 = _arrays(model.blocks[0][0])
    assert not np.array_equal(w1, _arrays(dense.blocks[0][0])[0])  # block 1 was compressed
    w2, b2 = _arrays(dense.blocks[1].fc2)
    h1, d1 = _linear_bound(w1, b1, x, np.zeros_like(x))
    h1 = np.maximum(h1, 0)  # relu widens no difference: d1 still bounds it
    h2, d2 = _linear_bound(w2, b2, h1, d1)
    h2 = np.maximum(h2, 0)
    one_shot = calibration.collect_gram(dense, _batches())
    for name, h, dh in (("blocks.1.fc2.weight", h1, d1), ("blocks.1.fc3.weight", h2, d2)):
        gram = got[f"{name}.gram"].astype(np.float64)
        want = h.T @ h
        # the file stores float32: one more rounding of each entry
        bound = _gram_bound(h, dh) + U32 * (np.abs(want) + _gram_bound(h, dh))
        _assert_gram_within(gram, want, bound, name)
        assert int(got[f"{name}.samples"][0]) == len(x)

        # ... and it is not the one-shot (dense-model) Gram matrix
        dense_gram = one_shot[name].gram
        assert (np.abs(dense_gram - want) > 10 * bound).any(), name
        assert np.linalg.norm(dense_gram - want) > 1e-3 * np.linalg.norm(want), name


def test_final_weights_equal_the_per_block_jobs_run_by_hand(client, tmp_path):
    dense = TwoBlocks().eval()
    model = copy.deepcopy(dense)
    seen = []
    result = _run(client, model, method="wanda", sparsity=0.5, on_block=lambda run, n: seen.append((run.index, n)))
    assert seen == [(0, 2), (1, 2)]

    by_hand = copy.deepcopy(dense)
    reports = []
    for i, prefix in enumerate(("blocks.0", "blocks.1")):
        stats = calibration.collect_gram(by_hand, _batches())
        block_stats = {k: s for k, s in stats.items() if k.startswith(prefix + ".")}
        weights = {k: v.detach().numpy().copy() for k, v in by_hand.state_dict().items()
                   if k.startswith(prefix + ".")}
        safetensors_io.write(tmp_path / f"w{i}.safetensors", weights)
        calibration.write_calibration(tmp_path / f"c{i}.safetensors", block_stats)
        out = client.compress(str(tmp_path / f"w{i}.safetensors"), method="wanda", sparsity=0.5,
                              calibration=str(tmp_path / f"c{i}.safetensors"))
        reports.append(out.report)
        by_hand.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in safetensors_io.loads(out.model).items()},
                                strict=False)
    assert _state_bytes(model) == _state_bytes(by_hand)
    # the head lies outside every block: untouched
    assert _state_bytes(model.head) == _state_bytes(dense.head)

    # one merged report: the blocks' rows in order, totals summed
    rows = [t.name for r in reports for t in r.tensors]
    assert [t.name for t in result.report.tensors] == rows
    assert [t.sparsity for t in result.report.tensors] == [t.sparsity for r in reports for t in r.tensors]
    assert result.report.totals.prunable_params == sum(r.totals.prunable_params for r in reports)
    assert result.report.totals.nonzero_after == sum(r.totals.nonzero_after for r in reports)
    assert result.sparsity == pytest.approx(0.5, abs=0.01)
    assert [b.report.tensors[0].name for b in result.blocks] == [reports[0].tensors[0].name,
                                                                  reports[1].tensors[0].name]
    assert all(b.seconds > 0 and b.calibration_seconds > 0 and b.job_seconds > 0 for b in result.blocks)


def test_two_runs_give_byte_identical_weights(client):
    first, second = TwoBlocks().eval(), TwoBlocks().eval()
    assert _state_bytes(first) == _state_bytes(second)
    a = _run(client, first)
    b = _run(client, second)
    assert _state_bytes(first) == _state_bytes(second)
    assert [t.reconstruction_error for t in a.report.tensors] == [t.reconstruction_error for t in b.report.tensors]


def test_blocks_can_be_named_by_prefix(client):
    by_module, by_prefix = TwoBlocks().eval(), TwoBlocks().eval()
    _run(client, by_module)
    sequential.compress_sequentially(client, by_prefix, ["blocks.0", "blocks.1."], _batches(),
                                     method="sparsegpt", sparsity=0.5)
    assert _state_bytes(by_module) == _state_bytes(by_prefix)


def test_a_block_without_a_calibrated_layer_is_a_clear_error(client):
    model = TwoBlocks().eval()
    before = _state_bytes(model)
    with pytest.raises(ValueError, match=r"block 1 \('blocks.0.1'\) holds no Linear, Conv"):
        sequential.compress_sequentially(client, model, [model.blocks[1], model.blocks[0][1]], _batches(),
                                         method="wanda", sparsity=0.5)
    with pytest.raises(ValueError, match=r"block 0: no module of the model is named 'layers.0'"):
        sequential.compress_sequentially(client, model, ["layers.0"], _batches(), method="wanda", sparsity=0.5)
    with pytest.raises(ValueError, match=r"blocks 0 and 1 share module 'blocks.1.fc2'"):
        sequential.compress_sequentially(client, model, ["blocks.1", model.blocks[1].fc2], _batches(),
                                         method="wanda", sparsity=0.5)
    with pytest.raises(TypeError, match="re-iterable"):
        sequential.compress_sequentially(client, model, [model.blocks[0]], iter(_batches()), method="wanda",
                                         sparsity=0.5)
    assert _state_bytes(model) == before  # all refused before any job


def test_a_refused_block_names_itself_and_keeps_the_blocks_before_it(strict_client):
    dense = TwoBlocks().eval()
    model = copy.deepcopy(dense)
    # A rule that selects block 0's weight only: the server refuses block 1's
    # job, which selects nothing.
    rules = [{"regex": r"^blocks\.0\.", "method": "wanda", "sparsity": 0.5}]
    with pytest.raises(sequential.BlockFailed) as caught:
        sequential.compress_sequentially(strict_client, model, list(model.blocks), _batches(), rules=rules)
    err = caught.value
    assert err.block == 1 and err.code_name == "INVALID_ARGUMENT"
    assert str(err).startswith("INVALID_ARGUMENT: block 1: ") and "already compressed" in str(err)
    assert err.__cause__ is not None and err.__cause__.message in err.message
    assert _state_bytes(model.blocks[0]) != _state_bytes(dense.blocks[0])
    assert _state_bytes(model.blocks[1]) == _state_bytes(dense.blocks[1])

    with pytest.raises(sequential.BlockFailed) as caught:
        _run(strict_client, copy.deepcopy(dense), method="sparsegpt", sparsity=1.5)
    assert caught.value.block == 0 and caught.value.code_name == "INVALID_ARGUMENT"
