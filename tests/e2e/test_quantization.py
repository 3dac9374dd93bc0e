"""Issue-11 weight quantization through the running server: rtn, gptq and
sparsegpt's joint pruning and quantization, checked against the numpy
references written from the papers (reference_methods.py) on random layers
with correlated inputs, safetensors and ONNX alike.

RTN is float32 arithmetic with one rounding per step, so the server must
match it bit for bit. GPTQ adds up thousands of float32 products in an
order of its own (blocks, BLAS), so its current weights drift from a
float64 reference's, and a weight lying closer to a rounding boundary than
that drift may round either way. The reference therefore follows the
server's codes and checks each one: it must be the reference's own choice,
or within `float32_slack` of a boundary (see there).
"""
from __future__ import annotations

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import reference_methods as ref
from bonsai import safetensors_io
from expect import expect_error

RNG = np.random.default_rng(11)
OUT, IN = 24, 96
LINEAR = RNG.standard_normal((OUT, IN)).astype(np.float32)        # [out, in]
CONV = RNG.standard_normal((8, 8, 3, 3)).astype(np.float32)        # [out, in, kh, kw]: 72 columns
U32 = 2.0 ** -24  # float32 unit roundoff


def correlated_inputs(rng, n: int, d: int, scales: bool = True) -> np.ndarray:
    """Inputs whose features share a few common factors, as activations do,
    with unequal channel scales: what GPTQ's error feedback exploits."""
    z = rng.standard_normal((n, d))
    mix = np.eye(d) + 0.6 * rng.standard_normal((d, 8)) @ rng.standard_normal((8, d)) / np.sqrt(8)
    x = z @ mix
    if scales:
        x = x * (0.5 + 2 * rng.random(d))
    return x.astype(np.float32)


X_LINEAR = correlated_inputs(RNG, 400, IN)
X_CONV = correlated_inputs(RNG, 400, 72)  # unfolded [n, in*kh*kw]


def _gram(x):
    return (x.astype(np.float64).T @ x.astype(np.float64)).astype(np.float32)


def _safetensors(**tensors) -> bytes:
    return safetensors_io.dumps(tensors)


def _grams(**activations) -> bytes:
    """A calibration file of Gram matrices, so server and reference see the same float32 H."""
    tensors = {}
    for name, x in activations.items():
        tensors[f"{name}.gram"] = _gram(x)
        tensors[f"{name}.samples"] = np.array([x.shape[0]], dtype=np.int64)
    return safetensors_io.dumps(tensors)


def _compress(client, model, **kwargs):
    result = client.compress(model, **kwargs)
    return result, safetensors_io.loads(result.model)


def _report(result, name):
    return next(t for t in result.report.tensors if t.name == name)


def float32_slack(d: int) -> float:
    """How far, relative to the magnitudes summed, a float32 sweep may move a
    weight from the float64 reference's before rounding it. Each current
    weight is a sum of up to d terms (its original value less one update per
    column before it), and a float32 sum of d terms is within d u sum|x_i|
    of the exact one (u = 2^-24); the factor U of the inverse Hessian, itself
    float32, errs by about as much again, hence 2 d u. A bound of float32
    arithmetic, not of one CPU: on these layers the drift is ~5x below it.
    """
    return 2 * d * U32


def _follow_and_check(got, w, gram, samples, reference, **kwargs):
    """Runs `reference` following the server's codes; returns its error."""
    expected, error, decisions = reference(w, gram, samples, follow=got,
                                           slack=float32_slack(w.shape[1]), **kwargs)
    assert decisions.off_grid == 0, decisions
    assert decisions.mask_differs == 0, decisions
    assert decisions.unexplained == 0, decisions
    assert decisions.differ <= 0.01 * decisions.weights, decisions  # ambiguity stays rare
    # Same codes: the values differ only by the grids' scales, each within
    # 2 slack / (2^b - 1) of the reference's, times a code of at most 2^b - 1.
    np.testing.assert_allclose(got, expected, rtol=0, atol=2 * decisions.widest + 1e-7)
    return error


# ------------------------------------------------------------------------ rtn

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [0, 32, 40])
@pytest.mark.parametrize("symmetric", [False, True])
def test_rtn_matches_reference_bit_for_bit(client, bits, group_size, symmetric):
    result, out = _compress(client, _safetensors(fc=LINEAR, conv=CONV), method="rtn",
                            options={"bits": bits, "group_size": group_size, "symmetric": symmetric})
    want_fc = ref.rtn_numpy(LINEAR, bits, group_size, symmetric)
    want_conv = ref.rtn_numpy(CONV.reshape(8, -1), bits, group_size, symmetric).reshape(CONV.shape)
    assert out["fc"].view(np.uint32).tolist() == want_fc.view(np.uint32).tolist()
    assert out["conv"].view(np.uint32).tolist() == want_conv.view(np.uint32).tolist()
    if group_size == 40:  # 96 = 2 * 40 + 16
        assert "last group of each row has 16" in _report(result, "fc").note


def test_group_size_zero_is_sent_apart_from_unset():
    """proto3 `optional`: 0 (one grid per output channel) must reach the server."""
    from bonsai import spec
    assert spec.method_options("rtn", {"group_size": 0}).rtn.HasField("group_size")
    assert spec.method_options("gptq", {"group_size": 0}).gptq.quant.HasField("group_size")
    assert not spec.method_options("rtn", {"bits": 4}).rtn.HasField("group_size")
    assert not spec.method_options("rtn", {"group_size": None}).HasField("rtn")


def test_rtn_default_is_4_bits_in_groups_of_128(client):
    w = RNG.standard_normal((4, 256)).astype(np.float32)
    _, out = _compress(client, _safetensors(w=w), method="rtn")
    np.testing.assert_array_equal(out["w"], ref.rtn_numpy(w, 4, 128))


def test_rtn_groups_run_down_an_onnx_matmul_weights_columns(client):
    """MatMul's B is stored [in, out]: the groups run along its reduction axis, in."""
    b = LINEAR.T.copy()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, OUT])],
        [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    result = client.compress(model.SerializeToString(), method="rtn", options={"bits": 3, "group_size": 32})
    got = numpy_helper.to_array(onnx.load_from_string(result.model).graph.initializer[0])
    np.testing.assert_array_equal(got.T, ref.rtn_numpy(LINEAR, 3, 32))


def test_rtn_with_calibration_reports_the_reconstruction_error(client):
    result, out = _compress(client, _safetensors(fc=LINEAR), method="rtn", options={"bits": 4},
                            calibration=_grams(fc=X_LINEAR))
    want = ref.reconstruction_error(LINEAR, out["fc"], _gram(X_LINEAR))
    assert _report(result, "fc").reconstruction_error == pytest.approx(want, rel=1e-4)
    assert _report(result, "fc").relative_error > 0


# ----------------------------------------------------------------------- gptq

@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group_size", [0, 32])
@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gptq_matches_reference_decision_by_decision(client, bits, group_size, act_order, symmetric):
    options = {"bits": bits, "group_size": group_size, "act_order": act_order, "symmetric": symmetric,
               "block_size": 32}
    result, out = _compress(client, _safetensors(fc=LINEAR), method="gptq", options=options,
                            calibration=_grams(fc=X_LINEAR))
    gram = _gram(X_LINEAR)
    error = _follow_and_check(out["fc"], LINEAR, gram, X_LINEAR.shape[0], ref.gptq_numpy, bits=bits,
                              group_size=group_size, symmetric=symmetric, act_order=act_order)
    assert _report(result, "fc").reconstruction_error == pytest.approx(error, rel=1e-3)


def test_gptq_dampening_reaches_the_method(client):
    """A dampening far from the default changes the codes, and the server's
    follow the reference's at that dampening."""
    options = {"bits": 3, "group_size": 32, "block_size": 16, "dampening": 0.5}
    result, out = _compress(client, _safetensors(fc=LINEAR), method="gptq", options=options,
                            calibration=_grams(fc=X_LINEAR))
    _, default = _compress(client, _safetensors(fc=LINEAR), method="gptq",
                           options={"bits": 3, "group_size": 32}, calibration=_grams(fc=X_LINEAR))
    assert not np.array_equal(out["fc"], default["fc"])
    error = _follow_and_check(out["fc"], LINEAR, _gram(X_LINEAR), X_LINEAR.shape[0], ref.gptq_numpy,
                              bits=3, group_size=32, percdamp=0.5)
    assert _report(result, "fc").reconstruction_error == pytest.approx(error, rel=1e-3)


@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_conv_and_groups_that_do_not_divide_the_axis(client, act_order):
    """Conv columns in unfold order, groups of 40 over 72 columns (the last
    has 32) that straddle blocks of 32: grids from the groups' current values."""
    options = {"bits": 4, "group_size": 40, "act_order": act_order, "block_size": 32}
    result, out = _compress(client, _safetensors(conv=CONV), method="gptq", options=options,
                            calibration=_grams(conv=X_CONV))
    w = CONV.reshape(8, -1)
    error = _follow_and_check(out["conv"].reshape(8, -1), w, _gram(X_CONV), X_CONV.shape[0],
                              ref.gptq_numpy, bits=4, group_size=40, act_order=act_order)
    report = _report(result, "conv")
    assert report.reconstruction_error == pytest.approx(error, rel=1e-3)
    assert "last group of each row has 32" in report.note


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_gptq_error_is_clearly_below_rtn_on_correlated_inputs(client, bits):
    model, calib = _safetensors(fc=LINEAR), _grams(fc=X_LINEAR)
    options = {"bits": bits, "group_size": 32}
    gptq, _ = _compress(client, model, method="gptq", options=options, calibration=calib)
    rtn, _ = _compress(client, model, method="rtn", options=options, calibration=calib)
    assert _report(gptq, "fc").reconstruction_error < 0.5 * _report(rtn, "fc").reconstruction_error


def test_gptq_and_rtn_are_byte_identical_across_runs(client):
    model, calib = _safetensors(fc=LINEAR, conv=CONV), _grams(fc=X_LINEAR, conv=X_CONV)
    for method, options in (("gptq", {"bits": 3, "act_order": True}), ("rtn", {"bits": 3})):
        first = client.compress(model, method=method, options=options, calibration=calib)
        second = client.compress(model, method=method, options=options, calibration=calib)
        assert [f.sha256 for f in first.report.files] == [f.sha256 for f in second.report.files]
        assert first.model == second.model


# ------------------------------------------------------- sparsegpt + bits

@pytest.mark.parametrize("name,w,x,kernel", [("fc", LINEAR, X_LINEAR, 1),
                                             ("conv", CONV.reshape(8, -1), X_CONV, 9)])
def test_sparsegpt_two_four_with_four_bits_in_one_pass(client, name, w, x, kernel):
    model = _safetensors(**{name: w.reshape(LINEAR.shape if kernel == 1 else CONV.shape)})
    result, out = _compress(client, model, method="sparsegpt",
                            options={"n": 2, "m": 4, "bits": 4, "group_size": 32, "block_size": 32},
                            calibration=_grams(**{name: x}))
    got = out[name].reshape(w.shape)
    error = _follow_and_check(got, w, _gram(x), x.shape[0], ref.sparsegpt_quant_numpy, bits=4, n=2, m=4,
                              group_size=32, blocksize=32, kernel=kernel)
    # 2:4 along input channels (at each kernel position), 16 levels per group of 32.
    groups = got.reshape(w.shape[0], -1, 4, kernel)  # [out, channel groups, 4, kernel]
    assert ((groups != 0).sum(axis=2) <= 2).all()
    for row in got:
        for g in range(0, w.shape[1], 32):
            assert len(np.unique(row[g:g + 32])) <= 16
    assert _report(result, name).reconstruction_error == pytest.approx(error, rel=1e-3)


def test_sparsegpt_with_bits_beats_pruning_then_rounding(client):
    """The joint pass compensates rounding errors too (here 0.39x the error
    of 2:4 followed by 3-bit round-to-nearest; at 4 bits 0.85x)."""
    calib = _grams(fc=X_LINEAR)
    joint, _ = _compress(client, _safetensors(fc=LINEAR), method="sparsegpt",
                         options={"n": 2, "m": 4, "bits": 3, "group_size": 0}, calibration=calib)
    _, pruned = _compress(client, _safetensors(fc=LINEAR), method="sparsegpt", options={"n": 2, "m": 4},
                          calibration=calib)
    rounded = ref.rtn_numpy(pruned["fc"], 3, 0)
    assert _report(joint, "fc").reconstruction_error < \
        0.7 * ref.reconstruction_error(LINEAR, rounded, _gram(X_LINEAR))


def test_sparsegpt_unstructured_with_bits(client):
    result, out = _compress(client, _safetensors(fc=LINEAR), method="sparsegpt", sparsity=0.5,
                            options={"bits": 3, "group_size": 0, "block_size": 32},
                            calibration=_grams(fc=X_LINEAR))
    error = _follow_and_check(out["fc"], LINEAR, _gram(X_LINEAR), X_LINEAR.shape[0],
                              ref.sparsegpt_quant_numpy, bits=3, sparsity=0.5, group_size=0, blocksize=32)
    assert (out["fc"] == 0).sum() >= LINEAR.size // 2
    assert _report(result, "fc").reconstruction_error == pytest.approx(error, rel=1e-3)


# ------------------------------------------------------------- bad input

@pytest.mark.parametrize("method", ["rtn", "gptq", "sparsegpt"])
@pytest.mark.parametrize("bits", [1, 5, 16])
def test_bits_outside_2_3_4_8_is_invalid_argument_naming_the_choices(client, method, bits):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_safetensors(fc=LINEAR), method=method, sparsity=0.5,
                                         options={"bits": bits}, calibration=_grams(fc=X_LINEAR)),
                 "bits", "2, 3, 4 or 8", str(bits))


def test_gptq_without_calibration_is_invalid_argument_saying_what_to_send(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_safetensors(fc=LINEAR), method="gptq"),
                 "gptq needs calibration data for tensor 'fc'", "fc.gram")


def test_act_order_with_sparsegpt_is_invalid_argument_pointing_at_gptq(client):
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_safetensors(fc=LINEAR), method="sparsegpt", sparsity=0.5,
                                         options={"bits": 4, "act_order": True},
                                         calibration=_grams(fc=X_LINEAR)),
                 "act_order", "gptq")


def test_quantizing_a_nan_weight_is_invalid_argument_naming_the_tensor(client):
    w = LINEAR.copy()
    w[3, 7] = np.nan
    expect_error(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: client.compress(_safetensors(fc=w), method="rtn"), "'fc'", "nan")


def test_capabilities_describe_the_quantizers(client):
    methods = {m.name: m for m in client.capabilities().methods}
    rtn, gptq = methods["rtn"], methods["gptq"]
    assert not rtn.needs_calibration and gptq.needs_calibration
    assert {p.name for p in rtn.parameters} == {"options.rtn.bits", "options.rtn.group_size",
                                                "options.rtn.symmetric"}
    assert {p.name for p in gptq.parameters} == {
        "options.gptq.quant.bits", "options.gptq.quant.group_size", "options.gptq.quant.symmetric",
        "options.gptq.act_order", "options.gptq.block_size", "options.gptq.dampening"}
    assert "options.sparsegpt.quant.bits" in {p.name for p in methods["sparsegpt"].parameters}
