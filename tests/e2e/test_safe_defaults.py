"""Safe defaults: structured pruning leaves the model's output heads whole and
says so; a job or recipe that selects nothing, and a recipe that asks for
something its method would ignore, are refused with the reason."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io

import models
from test_cli import run_cli


def _zero_rows(weight: np.ndarray, axis: int) -> int:
    """Output channels that are all zero (axis: the output axis)."""
    moved = np.moveaxis(weight, axis, 0).reshape(weight.shape[axis], -1)
    return int(np.sum(~moved.any(axis=1)))


def _invalid(call) -> str:
    with pytest.raises(bonsai.BonsaiError) as info:
        call()
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return info.value.message


# ------------------------------------------------------------- output heads

def test_structured_mask_leaves_the_onnx_classifier_whole_and_says_how_to_include_it(client, mlp_onnx):
    before = models.onnx_initializers(mlp_onnx)
    result = client.compress(mlp_onnx, method="structured", sparsity=0.5)
    after = models.onnx_initializers(result.model)
    # Gemm B is stored [in, out] or, with transB, [out, in]: the exporter's choice.
    assert np.array_equal(after["fc3.weight"], before["fc3.weight"])
    assert {t.name for t in result.report.tensors} == {"fc1.weight", "fc2.weight"}
    for name, channels in (("fc1.weight", 64), ("fc2.weight", 48)):
        axis = 0 if after[name].shape[0] == channels else 1
        assert _zero_rows(after[name], axis) == channels // 2
    [note] = [w for w in result.warnings if "fc3.weight" in w]
    assert "output channels are the model's outputs" in note and "--include 'fc3.weight'" in note


def test_structured_mask_keeps_every_class_of_the_cnn(client, cnn, cnn_onnx):
    """The digits case of issue 10: before, 5 of the 10 class rows were zeroed."""
    result = client.compress(cnn_onnx, method="structured", sparsity=0.5)
    after = models.onnx_initializers(result.model)
    fc = after["fc.weight"]
    axis = 0 if fc.shape[0] == 10 else 1
    assert _zero_rows(fc, axis) == 0
    assert _zero_rows(after["conv1.weight"], 0) == 4 and _zero_rows(after["conv2.weight"], 0) == 8


def test_an_include_naming_the_head_prunes_it(client, mlp_onnx):
    result = client.compress(mlp_onnx, method="structured", sparsity=0.5, include=[r"^fc3\.weight$"])
    fc3 = models.onnx_initializers(result.model)["fc3.weight"]
    axis = 0 if fc3.shape[0] == 10 else 1
    assert _zero_rows(fc3, axis) == 5
    assert not any("whole" in w for w in result.warnings)


def test_unstructured_methods_still_prune_the_head(client, mlp_onnx):
    result = client.compress(mlp_onnx, method="magnitude", sparsity=0.5)
    assert "fc3.weight" in {t.name for t in result.report.tensors}


def test_safetensors_last_layer_is_the_head_when_none_is_named(client, mlp, mlp_safetensors):
    result = client.compress(mlp_safetensors, method="structured", sparsity=0.5)
    out = safetensors_io.loads(result.model)
    assert np.array_equal(out["fc3.weight"], models.state_arrays(mlp)["fc3.weight"])
    assert _zero_rows(out["fc1.weight"], 0) == 32 and _zero_rows(out["fc2.weight"], 0) == 24
    assert any("left fc3.weight whole" in w for w in result.warnings)


@pytest.mark.parametrize("head", ["classifier", "score", "head", "model.classifier"])
def test_safetensors_tensors_named_as_heads_are_left_whole(client, head):
    rng = np.random.default_rng(3)
    tensors = {f"{head}.weight": rng.standard_normal((6, 8)).astype(np.float32),
               "encoder.dense.weight": rng.standard_normal((8, 8)).astype(np.float32),
               "encoder.out.weight": rng.standard_normal((8, 8)).astype(np.float32)}
    result = client.compress(safetensors_io.dumps(tensors), method="structured", sparsity=0.5)
    out = safetensors_io.loads(result.model)
    assert np.array_equal(out[f"{head}.weight"], tensors[f"{head}.weight"])
    # With a head named, the last tensor in order is an ordinary layer.
    assert _zero_rows(out["encoder.out.weight"], 0) == 4
    assert any(f"left {head}.weight whole" in w for w in result.warnings)


def test_inspect_marks_the_heads_structured_pruning_leaves_whole(client, server, mlp_onnx, mlp_safetensors,
                                                                 tmp_path):
    """The same heads as the structured jobs above leave whole, seen before
    any job: the ONNX classifier (its channels reach the graph output) and,
    in safetensors, a head by name or else the last weight matrix."""
    onnx_heads = {t.name for t in client.inspect(mlp_onnx).tensors if t.output_head}
    assert onnx_heads == {"fc3.weight"}
    assert {t.name for t in client.inspect(mlp_safetensors).tensors if t.output_head} == {"fc3.weight"}
    rng = np.random.default_rng(3)
    named = {"classifier.weight": rng.standard_normal((6, 8)).astype(np.float32),
             "encoder.out.weight": rng.standard_normal((8, 8)).astype(np.float32)}
    assert {t.name for t in client.inspect(safetensors_io.dumps(named)).tensors if t.output_head} == \
        {"classifier.weight"}
    lone = {"w": rng.standard_normal((8, 6)).astype(np.float32)}
    assert not any(t.output_head for t in client.inspect(safetensors_io.dumps(lone)).tensors)
    src = tmp_path / "mlp.onnx"
    src.write_bytes(mlp_onnx)
    proc = run_cli("inspect", str(src), target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert "output heads (structured pruning leaves them whole unless an --include names them): fc3.weight" \
        in proc.stdout


# ------------------------------------------------------- selecting nothing

def test_a_job_that_selects_no_tensor_is_invalid_argument_naming_the_selection(strict_client, mlp_safetensors):
    message = _invalid(lambda: strict_client.compress(mlp_safetensors, exclude=["weight"]))
    assert "no tensor of the model is selected" in message and "exclude ['weight']" in message
    message = _invalid(lambda: strict_client.compress(mlp_safetensors, include=["decoder"], include_only=True))
    assert "include_only, include ['decoder']" in message and "inspect" in message


def test_a_recipe_whose_rules_match_nothing_is_invalid_argument(strict_client, mlp_safetensors):
    rules = [{"tensor_regex": r"^model\.layers\.0\.", "method": "magnitude", "sparsity": 0.5}]
    message = _invalid(lambda: strict_client.compress(mlp_safetensors, rules=rules))
    assert "no rule matches any of the 3 selected tensors" in message
    assert "model\\.layers\\.0\\." in message and "fc1.weight" in message


def test_a_rule_that_matches_nothing_beside_others_is_a_warning(client, mlp_safetensors):
    rules = [{"tensor_regex": "^fc1", "method": "magnitude", "sparsity": 0.5, "name": "first"},
             {"tensor_regex": "^decoder", "method": "magnitude", "sparsity": 0.5, "name": "typo"}]
    result = client.compress(mlp_safetensors, rules=rules)
    assert [t.name for t in result.report.tensors] == ["fc1.weight"]
    assert any("typo (tensor_regex '^decoder') took no tensor" in w for w in result.warnings)


# -------------------------------------------------------- recipe validation

def test_method_together_with_rules_is_invalid_argument(strict_client, mlp_safetensors):
    rules = [{"tensor_regex": "fc", "method": "magnitude", "sparsity": 0.5}]
    message = _invalid(lambda: strict_client.compress(mlp_safetensors, method="nm", rules=rules))
    assert "both method 'nm' and 1 rules" in message


def test_a_rule_without_the_sparsity_its_method_needs_is_invalid_argument(strict_client, mlp_safetensors):
    rules = [{"tensor_regex": "fc", "method": "magnitude", "name": "all"}]
    message = _invalid(lambda: strict_client.compress(mlp_safetensors, rules=rules))
    assert message.startswith("all: method 'magnitude' needs a sparsity")


@pytest.mark.parametrize("method,options,unread,readers", [
    ("magnitude", {"bits": 4}, "bits", "sparsegpt, rtn, gptq"),
    ("nm", {"n": 2, "m": 4, "norm": "l1"}, "norm", "structured"),
    ("rtn", {"act_order": True}, "act_order", "gptq"),
    ("structured", {"group_size": 0}, "group_size", "sparsegpt, rtn, gptq"),
])
def test_an_option_the_method_does_not_read_is_invalid_spec(strict_client, mlp_safetensors,
                                                            method, options, unread, readers):
    # Each method's options are a message of its own, so the client cannot
    # even write this one: it refuses it as the server would.
    with pytest.raises(bonsai.InvalidSpec) as info:
        strict_client.compress(mlp_safetensors, method=method, options=options)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and info.value.reason == "INVALID_SPEC"
    assert f"method '{method}' does not read option '{unread}'" in info.value.message
    assert f"choose a method that reads it ({readers};" in info.value.message


def test_cli_no_selected_tensor_exits_2_with_the_selection(server, mlp_safetensors, tmp_path):
    src = tmp_path / "mlp.safetensors"
    src.write_bytes(mlp_safetensors)
    out = tmp_path / "out.safetensors"
    proc = run_cli("compress", str(src), "-o", str(out), "--exclude", ".", target=server.target)
    assert proc.returncode == 2
    assert "INVALID_ARGUMENT: no tensor of the model is selected" in proc.stderr and "exclude ['.']" in proc.stderr
    assert not out.exists()


def test_a_lone_safetensors_weight_is_no_head(client):
    weight = np.random.default_rng(4).standard_normal((8, 6)).astype(np.float32)
    result = client.compress(safetensors_io.dumps({"w": weight}), method="structured", sparsity=0.5)
    assert _zero_rows(safetensors_io.loads(result.model)["w"], 0) == 4
    assert not result.warnings
