"""bonsai.calibration writes the Gram matrices the server expects, under the
names the model's own tensors carry (safetensors keys or ONNX initializers)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn as nn

import models
from bonsai import calibration, safetensors_io


class WithSequence(nn.Module):
    """A Linear on 3-D input: ONNX export folds its weight into a MatMul constant."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 5)

    def forward(self, x):
        return self.proj(x)


def _batches(shape, count=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) for _ in range(count)]


# Unit roundoffs (half the machine epsilon) and Higham's gamma_n = n*u/(1-n*u),
# the bound on the relative error of any n-term sum of products in that
# precision, whatever the order or FMA use: the same on every CPU and BLAS kernel.
U32, U64 = 2.0**-24, 2.0**-53


def _gamma(n, u):
    return n * u / (1 - n * u)


def _assert_gram_within(got, rows, bound, what):
    """got ≈ rowsᵀ·rows, elementwise within `bound` (float64 arrays)."""
    want = rows.T @ rows
    excess = np.abs(got - want) - bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert (excess <= 0).all(), (
        f"{what}: |got - want| exceeds the rounding bound at {worst}: "
        f"{abs(got - want)[worst]:.3g} > {bound[worst]:.3g}")


def test_linear_gram_is_sum_of_input_outer_products():
    model = models.build_mlp()
    batches = _batches(models.MLP_INPUT)
    stats = calibration.collect_gram(model, batches)
    x = torch.cat(batches).double().numpy()
    n = x.shape[0]
    # fc1's inputs are the float32 batches themselves: both sides sum the same
    # exact products (float32 × float32 fits float64) in float64, per batch or
    # all at once, so each is within gamma_n(u64)·Σ|x_i||x_j| of the exact sum.
    ax = np.abs(x)
    _assert_gram_within(stats["fc1.weight"].gram, x, 2 * _gamma(n, U64) * (ax.T @ ax), "fc1")
    assert stats["fc1.weight"].samples == n

    # fc2's inputs h = relu(x·Wᵀ + b) are computed in float32, by the hook per
    # batch and here on all rows at once; BLAS may sum the d_in products in
    # another order (another kernel, FMA or not), so the two h differ. Each is
    # within gamma_{d_in+1}(u32)·a of the exact value, a = |x|·|W|ᵀ + |b|, and
    # relu does not widen a difference, so |h_hook - h| ≤ e·a, e = 2·gamma.
    # Then |Σ h_hook_i h_hook_j - Σ h_i h_j| ≤ Σ e(a_i|h_j| + |h_i|a_j) + e²a_i a_j,
    # and both float64 Gram sums add gamma_n(u64) of Σ|h_i||h_j| each.
    fc1 = model.fc1
    h = torch.relu(fc1(torch.cat(batches))).detach().double().numpy()
    w, b = fc1.weight.detach().double().numpy(), fc1.bias.detach().double().numpy()
    a = ax @ np.abs(w).T + np.abs(b)
    e = 2 * _gamma(w.shape[1] + 1, U32)
    ah = np.abs(h)
    mixed = e * (a.T @ ah + ah.T @ a) + e * e * (a.T @ a)
    bound = (1 + _gamma(n, U64)) * mixed + 2 * _gamma(n, U64) * (ah.T @ ah)
    _assert_gram_within(stats["fc2.weight"].gram, h, bound * (1 + 1e-9), "fc2")


def test_conv_gram_columns_line_up_with_the_flattened_weight():
    model = models.build_cnn()
    batches = _batches(models.CNN_INPUT)
    stats = calibration.collect_gram(model, batches)
    conv = model.conv2
    d = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert stats["conv2.weight"].gram.shape == (d, d)
    # The rows the hook sees, times weight.reshape(out, -1)ᵀ, are the conv's outputs.
    x = torch.relu(model.conv1(batches[0]))
    rows = calibration._conv_rows(conv, x)
    out = rows @ conv.weight.reshape(conv.out_channels, -1).T + conv.bias
    want = conv(x).permute(0, 2, 3, 1).reshape(-1, conv.out_channels)
    torch.testing.assert_close(out, want, rtol=1e-4, atol=1e-5)
    assert stats["conv2.weight"].samples == 3 * want.shape[0]


def test_calibration_file_holds_f32_gram_and_i64_samples_per_weight(tmp_path):
    model = models.build_cnn()
    path = tmp_path / "calib.safetensors"
    stats = calibration.calibrate(model, _batches(models.CNN_INPUT), path)
    header = safetensors_io.read_header(path.read_bytes())
    tensors = safetensors_io.load(path)
    for name, s in stats.items():
        d = s.gram.shape[0]
        assert header[f"{name}.gram"]["dtype"] == "F32" and header[f"{name}.gram"]["shape"] == [d, d]
        assert header[f"{name}.samples"]["dtype"] == "I64" and header[f"{name}.samples"]["shape"] == [1]
        assert tensors[f"{name}.samples"][0] == s.samples
    assert set(stats) == {"conv1.weight", "conv2.weight", "fc.weight"}


def test_onnx_name_map_follows_initializers_renamed_by_constant_folding():
    model = WithSequence().eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(2, 3, 6), buffer, opset_version=13, export_params=True)
    mlp = models.build_mlp()
    mlp_map = calibration.onnx_name_map(models.to_onnx(mlp, models.MLP_INPUT), mlp)
    assert mlp_map == {n: n for n in models.prunable_names(mlp)}  # Gemm keeps state_dict names
    renamed = calibration.onnx_name_map(buffer.getvalue(), model)
    initializers = models.onnx_initializers(buffer.getvalue())
    target = renamed["proj.weight"]
    np.testing.assert_array_equal(initializers[target], model.proj.weight.detach().numpy().T)


# ---------------------------------------------------------------- with the server

def test_server_prunes_with_wanda_using_the_calibration_file(client, cnn, cnn_safetensors, tmp_path):
    from reference_methods import wanda_numpy
    path = tmp_path / "calib.safetensors"
    stats = calibration.calibrate(cnn, _batches(models.CNN_INPUT, count=4), path)
    result = client.compress(cnn_safetensors, method="wanda", sparsity=0.5, calibration=str(path))
    out = safetensors_io.loads(result.model)
    for name in models.prunable_names(cnn):
        w = models.state_arrays(cnn)[name]
        want, _ = wanda_numpy(w.reshape(w.shape[0], -1), stats[name].gram.astype(np.float32), 0.5)
        np.testing.assert_array_equal(out[name].reshape(w.shape[0], -1) != 0, want != 0, err_msg=name)


def test_server_finds_calibration_of_onnx_weights_renamed_by_export(client, tmp_path):
    torch.manual_seed(4)
    model = WithSequence().eval()
    buffer = io.BytesIO()
    torch.onnx.export(model, torch.zeros(2, 3, 6), buffer, opset_version=13, export_params=True)
    path = tmp_path / "calib.safetensors"
    calibration.calibrate(model, _batches((2, 3, 6)), path, onnx_model=buffer.getvalue())
    result = client.compress(buffer.getvalue(), method="sparsegpt", sparsity=0.4, calibration=str(path))
    pruned = [t for t in result.report.tensors if t.method == "sparsegpt"]
    assert len(pruned) == 1 and pruned[0].name.startswith("onnx::MatMul")
    assert pruned[0].nonzero_after == pruned[0].params - round(0.4 * pruned[0].params)


# Each layer kind's rows, checked against the layer itself: rows · Wᵀ, with W
# flattened as the server reads it, must be the layer's output without bias.
CONV_CASES = [
    (nn.Conv1d(3, 5, 3, stride=2, padding=1, dilation=2), (2, 3, 11)),
    (nn.Conv1d(4, 6, 3, groups=2, padding="same"), (2, 4, 9)),
    (nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)), (2, 3, 7, 8)),
    (nn.ConvTranspose1d(3, 5, 4, stride=2, padding=1, output_padding=1), (2, 3, 6)),
    (nn.ConvTranspose2d(3, 4, (3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 2), dilation=(1, 2)),
     (2, 3, 5, 4)),
    (nn.ConvTranspose2d(2, 3, 3, stride=1, padding=2), (1, 2, 6, 6)),
]


@pytest.mark.parametrize("layer,shape", CONV_CASES, ids=[f"{type(l).__name__}-{i}" for i, (l, _) in enumerate(CONV_CASES)])
def test_conv_rows_times_the_flattened_weight_give_the_layers_output(layer, shape):
    torch.manual_seed(1)
    layer = layer.double()
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        want = layer(x) - layer.bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    w = layer.weight
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
        rows = calibration._conv_transpose_rows(layer, x)
        flat = w.transpose(0, 1).reshape(w.shape[1], -1)  # [in, out, k...] read with output axis 1
        got = (rows @ flat.T).reshape(x.shape[0], -1, flat.shape[0])
    else:
        rows = calibration._conv_rows(layer, x)
        flat = w.reshape(w.shape[0], -1)
        g = layer.groups
        per_group = rows.reshape(x.shape[0], g, -1, flat.shape[1])  # [N, groups, L, d]
        outs = [per_group[:, k] @ flat[k * (w.shape[0] // g):(k + 1) * (w.shape[0] // g)].T for k in range(g)]
        got = torch.cat(outs, dim=2)
    want = want.reshape(x.shape[0], want.shape[1], -1).transpose(1, 2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_conv1d_and_transposed_layers_get_statistics_and_unsupported_ones_say_why():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.conv = nn.Conv1d(4, 6, 3, padding=1)
            self.up = nn.ConvTranspose1d(6, 4, 2, stride=2)
            self.grouped = nn.ConvTranspose1d(4, 4, 2, groups=2)
            self.unused = nn.Linear(4, 4)

        def forward(self, ids):
            h = self.embed(ids).transpose(1, 2)  # [N, 4, L]
            return self.grouped(self.up(self.conv(h)))

    model = Mixed()
    ids = [torch.randint(0, 10, (2, 7), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    stats = calibration.collect_gram(model, ids)
    assert set(stats) == {"conv.weight", "up.weight"}
    assert stats["conv.weight"].gram.shape == (12, 12) and stats["conv.weight"].samples == 2 * 2 * 7
    assert stats["up.weight"].gram.shape == (12, 12) and stats["up.weight"].samples == 2 * 2 * 14
    assert set(stats.skipped) == {"embed.weight", "grouped.weight", "unused.weight"}
    assert "not activations" in stats.skipped["embed.weight"]
    assert "groups=2" in stats.skipped["grouped.weight"]
    assert "never ran" in stats.skipped["unused.weight"]
