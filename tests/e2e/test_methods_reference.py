"""Issue-3 methods through the running server, checked against independent
numpy implementations of each paper's algorithm (reference_methods.py), on
random layers in safetensors and ONNX alike."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import reference_methods as ref
from bonsai import safetensors_io

RNG = np.random.default_rng(1234)
LINEAR = RNG.standard_normal((48, 64)).astype(np.float32)       # [out, in]
CONV = RNG.standard_normal((16, 8, 3, 3)).astype(np.float32)     # [out, in, kh, kw]
X_LINEAR = RNG.standard_normal((256, 64)).astype(np.float32)
X_CONV = RNG.standard_normal((300, 72)).astype(np.float32)       # unfolded [n, in*kh*kw]


def _safetensors(**tensors) -> bytes:
    return safetensors_io.dumps(tensors)


def _calibration(**activations) -> bytes:
    return safetensors_io.dumps({name: x for name, x in activations.items()})


def _compress(client, model, **kwargs):
    result = client.compress(model, **kwargs)
    return result, safetensors_io.loads(result.model)


def _gram(x):
    return (x.astype(np.float64).T @ x.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_matches_reference_group_by_group(client, n, m):
    _, out = _compress(client, _safetensors(fc=LINEAR, conv=CONV), method="nm", options={"n": n, "m": m})
    np.testing.assert_array_equal(out["fc"], ref.nm_numpy(LINEAR, n, m))
    expected_conv = ref.nm_numpy(CONV.reshape(16, -1), n, m, kernel=9).reshape(CONV.shape)
    np.testing.assert_array_equal(out["conv"], expected_conv)
    groups = out["fc"].reshape(48, -1, m)
    assert ((groups != 0).sum(axis=2) <= n).all()


def test_nm_leaves_a_tail_dense_and_says_so(client):
    w = RNG.standard_normal((8, 10)).astype(np.float32)
    result, out = _compress(client, _safetensors(w=w), method="nm", options={"n": 2, "m": 4})
    np.testing.assert_array_equal(out["w"][:, 8:], w[:, 8:])
    assert "dense" in result.report.tensors[0].note


def test_structured_mask_matches_reference(client):
    for norm in ("l1", "l2"):
        _, out = _compress(client, _safetensors(fc=LINEAR), method="structured", sparsity=0.25,
                           options={"norm": norm})
        expected, removed = ref.structured_numpy(LINEAR, 0.25, norm)
        np.testing.assert_array_equal(out["fc"], expected)
        assert len(removed) == 12


def test_binarize_matches_reference(client):
    _, out = _compress(client, _safetensors(fc=LINEAR, conv=CONV), method="binarize")
    np.testing.assert_allclose(out["fc"], ref.binarize_numpy(LINEAR)[0], rtol=1e-6)
    expected = ref.binarize_numpy(CONV.reshape(16, -1))[0].reshape(CONV.shape)
    np.testing.assert_allclose(out["conv"], expected, rtol=1e-6)
    assert all(len(np.unique(np.abs(row))) == 1 for row in out["fc"])


@pytest.mark.parametrize("per_channel", [False, True])
def test_ternarize_matches_reference(client, per_channel):
    _, out = _compress(client, _safetensors(fc=LINEAR), method="ternarize",
                       options={"per_channel": per_channel})
    expected, _ = ref.ternarize_numpy(LINEAR, per_channel=per_channel)
    np.testing.assert_allclose(out["fc"], expected, rtol=1e-6)
    assert len(np.unique(out["fc"])) <= (3 if not per_channel else 3 * 48)


@pytest.mark.parametrize("sparsity,n,m", [(0.5, 0, 0), (0.7, 0, 0), (0.0, 2, 4)])
def test_sparsegpt_matches_reference_on_linear_and_conv(client, sparsity, n, m):
    options = {"n": n, "m": m, "block_size": 32} if m else {"block_size": 32}
    result, out = _compress(client, _safetensors(fc=LINEAR, conv=CONV), method="sparsegpt",
                            sparsity=sparsity, options=options,
                            calibration=_calibration(fc=X_LINEAR, conv=X_CONV))
    for name, w, x, kernel in (("fc", LINEAR, X_LINEAR, 1), ("conv", CONV.reshape(16, -1), X_CONV, 9)):
        expected, error = ref.sparsegpt_numpy(w, _gram(x), x.shape[0], sparsity=sparsity, n=n, m=m,
                                              blocksize=32, kernel=kernel)
        got = out[name].reshape(w.shape)
        np.testing.assert_array_equal(got == 0, expected == 0)  # the same mask
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)  # the same updates
        report = next(t for t in result.report.tensors if t.name == name)
        assert report.reconstruction_error == pytest.approx(error, rel=1e-3, abs=1e-6)


def test_sparsegpt_block_size_and_dampening_reach_the_method(client):
    """Both away from their defaults: the server matches the reference run
    with them, and not the one with the defaults."""
    calib = _calibration(fc=X_LINEAR)
    result, out = _compress(client, _safetensors(fc=LINEAR), method="sparsegpt", sparsity=0.5,
                            options={"block_size": 16, "dampening": 0.3}, calibration=calib)
    expected, error = ref.sparsegpt_numpy(LINEAR, _gram(X_LINEAR), X_LINEAR.shape[0], sparsity=0.5,
                                          blocksize=16, percdamp=0.3)
    np.testing.assert_array_equal(out["fc"] == 0, expected == 0)
    np.testing.assert_allclose(out["fc"], expected, rtol=1e-3, atol=1e-4)
    assert result.report.tensors[0].reconstruction_error == pytest.approx(error, rel=1e-3, abs=1e-6)
    defaults, _ = ref.sparsegpt_numpy(LINEAR, _gram(X_LINEAR), X_LINEAR.shape[0], sparsity=0.5)
    assert not np.allclose(out["fc"], defaults, rtol=1e-3, atol=1e-4)


def test_sparsegpt_beats_magnitude_on_reconstruction(client):
    model = _safetensors(fc=LINEAR)
    calib = _calibration(fc=X_LINEAR)
    gram = _gram(X_LINEAR)
    _, sgpt = _compress(client, model, method="sparsegpt", sparsity=0.7, calibration=calib)
    _, mag = _compress(client, model, method="magnitude", sparsity=0.7)
    assert ref.reconstruction_error(LINEAR, sgpt["fc"], gram) < ref.reconstruction_error(LINEAR, mag["fc"], gram)


def test_wanda_nm_matches_reference(client):
    _, out = _compress(client, _safetensors(fc=LINEAR), method="wanda", options={"n": 2, "m": 4},
                       calibration=_calibration(fc=X_LINEAR))
    expected = ref.wanda_numpy(LINEAR, _gram(X_LINEAR), n=2, m=4)
    expected = expected[0] if isinstance(expected, tuple) else expected
    np.testing.assert_array_equal(out["fc"], expected)


def test_onnx_gemm_weight_is_grouped_along_its_reduction_axis(client):
    """MatMul's B is stored [in, out]: N:M groups run down its columns."""
    b = LINEAR.T.copy()  # [in, out]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 48])],
        [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = client.compress(model.SerializeToString(), method="nm", options={"n": 2, "m": 4})
    pruned = onnx.load_from_string(result.model)
    onnx.checker.check_model(pruned)
    got = numpy_helper.to_array(pruned.graph.initializer[0])
    np.testing.assert_array_equal(got.T, ref.nm_numpy(LINEAR, 2, 4))


def test_calibration_method_without_calibration_names_the_tensor(client):
    import bonsai
    with pytest.raises(bonsai.BonsaiError) as info:
        client.compress(_safetensors(fc=LINEAR), method="sparsegpt", sparsity=0.5)
    assert info.value.code_name == "INVALID_ARGUMENT" and "fc" in info.value.message
