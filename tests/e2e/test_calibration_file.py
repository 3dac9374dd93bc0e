"""bonsai.calibration writes the Gram matrices the server expects, under the
names the model's own tensors carry (safetensors keys or ONNX initializers)."""
from __future__ import annotations

import io

import numpy as np
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


def test_linear_gram_is_sum_of_input_outer_products():
    model = models.build_mlp()
    batches = _batches(models.MLP_INPUT)
    stats = calibration.collect_gram(model, batches)
    x = torch.cat(batches).double()
    np.testing.assert_allclose(stats["fc1.weight"].gram, (x.T @ x).numpy(), rtol=1e-10)
    assert stats["fc1.weight"].samples == x.shape[0]
    # fc2's inputs batch by batch, as the model computed them: a float32
    # matmul's last bits depend on the batch's shape under some BLAS kernels
    # (OpenBLAS's Haswell ones on a stacked batch differ by ~3e-6 here).
    h1 = torch.cat([torch.relu(model.fc1(b)) for b in batches]).detach().double()
    np.testing.assert_allclose(stats["fc2.weight"].gram, (h1.T @ h1).numpy(), rtol=1e-10)


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
