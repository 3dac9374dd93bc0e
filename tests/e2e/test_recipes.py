"""Recipes from the field: llm-compressor recipe YAML and bonsai's own rules
in YAML, through the library and the CLI, against a Hugging Face checkpoint
folder. Masks are checked against torch; quantization recipes against the
same job written as bonsai rules."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

import bonsai
import hf_checkpoint as hf
from bonsai import recipes
from test_cli import run_cli

LAYER0 = [n for n in hf.SELECTED if n.startswith("model.layers.0.")]

MAGNITUDE_RECIPE = r"""
oneshot_stage:
  pruning_modifiers:
    MagnitudePruningModifier:
      final_sparsity: 0.6
      start: 0
      end: 0
      targets: ['re:model.layers.0$']
      ignore: ['re:.*down_proj']
"""

GPTQ_STYLE_RTN = """
quant_stage:
  quant_modifiers:
    QuantizationModifier:
      targets: Linear
      ignore: [lm_head]
      scheme: W4A16
"""


@pytest.fixture(scope="module")
def tensors():
    return hf.make_tensors(seed=5)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, tensors):
    path = tmp_path_factory.mktemp("hf") / "tiny-llm"
    hf.write_checkpoint(path, tensors)
    return path


def _values(tensors, names):
    return {n: tensors[n].values for n in names}


def test_magnitude_recipe_prunes_its_targets_but_not_what_it_ignores(client, folder, tensors, tmp_path):
    targeted = [n for n in LAYER0 if "down_proj" not in n]
    out_dir = tmp_path / "out"
    result = client.compress(str(folder), recipe=MAGNITUDE_RECIPE, output_path=str(out_dir))
    out, _, _ = hf.read_output(out_dir)
    keep = hf.torch_layer_keep(_values(tensors, targeted), 0.6)
    for name, mask in keep.items():
        np.testing.assert_array_equal(out[name] != 0, mask, err_msg=name)
    for name in set(tensors) - set(targeted):
        np.testing.assert_array_equal(out[name].view(np.uint32), tensors[name].values.view(np.uint32), err_msg=name)
    assert {t.name: t.rule for t in result.report.tensors} == {
        n: "oneshot_stage.pruning_modifiers.MagnitudePruningModifier" for n in targeted}


def test_magnitude_recipe_with_a_2_4_mask_gives_2_of_every_4(client, folder, tmp_path):
    recipe = {"stage": {"pruning_modifiers": {"MagnitudePruningModifier": {
        "sparsity": 0.5, "mask_structure": "2:4", "targets": ["re:model.layers.1$"]}}}}
    out_dir = tmp_path / "nm"
    result = client.compress(str(folder), recipe=recipe, output_path=str(out_dir))
    out, _, _ = hf.read_output(out_dir)
    layer1 = [n for n in hf.SELECTED if n.startswith("model.layers.1.")]
    assert sorted(t.name for t in result.report.tensors) == sorted(layer1)
    for name in layer1:
        groups = (out[name] != 0).reshape(out[name].shape[0], -1, 4).sum(axis=2)
        assert (groups <= 2).all() and result.tensor(name).method == "nm", name


def test_quantization_recipe_equals_the_same_job_as_bonsai_rules(client, folder, tmp_path):
    from_recipe = client.compress(str(folder), recipe=GPTQ_STYLE_RTN, output_path=str(tmp_path / "a"))
    rules = [{"tensor_regex": "(?:^|\\.)lm_head(?:\\.|$)", "method": "none"},
             {"tensor_regex": ".", "method": "rtn", "options": {"bits": 4, "group_size": 128, "symmetric": True}}]
    from_rules = client.compress(str(folder), rules=rules, output_path=str(tmp_path / "b"))
    assert [f.sha256 for f in from_recipe.report.files] == [f.sha256 for f in from_rules.report.files]
    assert {t.method for t in from_recipe.report.tensors} == {"rtn"}
    assert sorted(t.name for t in from_recipe.report.tensors) == sorted(hf.SELECTED)


def test_cli_recipe_and_yaml_rules_give_the_same_model(server, folder, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(MAGNITUDE_RECIPE)
    rules_yaml = tmp_path / "rules.yaml"
    rules_yaml.write_text("rules:\n"
                          "  - {tensor_regex: 'down_proj', method: none}\n"
                          "  - {tensor_regex: '^model\\.layers\\.0\\.', method: magnitude, sparsity: 0.6}\n")
    a, b = tmp_path / "a", tmp_path / "b"
    proc = run_cli("compress", str(folder), "-o", str(a), "--recipe", str(recipe), target=server.target)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("compress", str(folder), "-o", str(b), "--rules", str(rules_yaml), target=server.target)
    assert proc.returncode == 0, proc.stderr
    for shard in hf.SHARDS:
        assert (a / shard).read_bytes() == (b / shard).read_bytes(), shard


def test_cli_rules_json_object_form(server, folder, tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": [{"tensor_regex": "q_proj", "method": "magnitude", "sparsity": 0.5}]}))
    report = tmp_path / "report.json"
    proc = run_cli("compress", str(folder), "-o", str(tmp_path / "o"), "--rules", str(rules),
                   "--report-json", str(report), target=server.target)
    assert proc.returncode == 0, proc.stderr
    assert sorted(t["name"] for t in json.loads(report.read_text())["tensors"]) == sorted(
        n for n in hf.SELECTED if "q_proj" in n)


@pytest.mark.parametrize("text,named", [
    ("s:\n  m_modifiers:\n    SmoothQuantModifier: {smoothing_strength: 0.8}\n", "SmoothQuantModifier"),
    ("s:\n  m_modifiers:\n    GPTQModifier: {scheme: W8A8, targets: Linear}\n", "scheme 'W8A8'"),
    ("s:\n  m_modifiers:\n    SparseGPTModifier: {sparsity: 0.5, sequential_update: true}\n", "sequential_update"),
    ("s:\n  m_modifiers:\n    WandaPruningModifier: {sparsity: 0.5, owl_m: 5}\n", "owl_m"),
    ("s:\n  m_modifiers:\n    SparseGPTModifier: {sparsity: 0.5, mask_structure: '16:32:1'}\n", "mask_structure"),
    ("s:\n  m_modifiers:\n    GPTQModifier: {scheme: W4A16, actorder: group}\n", "actorder 'group'"),
    ("s:\n  m_modifiers:\n    MagnitudePruningModifier: {init_sparsity: 0.1, final_sparsity: 0.5, start: 0, end: 5}\n",
     "gradual pruning"),
    ("s:\n  m_modifiers:\n    SparseGPTModifier: {sparsity: 0.5, targets: [LlamaDecoderLayer]}\n", "LlamaDecoderLayer"),
    ("s:\n  run_type: train\n  m_modifiers:\n    WandaPruningModifier: {sparsity: 0.5}\n", "run_type"),
])
def test_cli_unimplemented_modifier_or_field_exits_2_naming_it(server, folder, tmp_path, text, named):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    out = tmp_path / "o"
    proc = run_cli("compress", str(folder), "-o", str(out), "--recipe", str(recipe), target=server.target)
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr and "not" in proc.stderr
    assert not out.exists()


def test_library_recipe_error_is_a_value_error_before_any_upload(client, folder):
    with pytest.raises(recipes.RecipeError, match="SmoothQuantModifier"):
        client.compress(str(folder), recipe={"s": {"m_modifiers": {"SmoothQuantModifier": {}}}})


def test_rules_file_given_an_llmcompressor_recipe_points_to_recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(MAGNITUDE_RECIPE)
    with pytest.raises(recipes.RecipeError, match="--recipe"):
        recipes.load_rules(str(path))


def test_recipe_mapping_of_sparsegpt_and_gptq_fields():
    """The server cannot see the mapping of fields it gets no calibration
    for here (SparseGPT, GPTQ): the rules the recipe becomes, exactly."""
    rules = recipes.from_llmcompressor("""
test_stage:
  obcq_modifiers:
    SparseGPTModifier:
      sparsity: 0.5
      mask_structure: "2:4"
      block_size: 64
      dampening_frac: 0.05
      sequential_update: false
      targets: ['re:model.layers.\\d+$']
      ignore: ['re:.*lm_head']
  quant_modifiers:
    GPTQModifier: {scheme: W8A16, targets: [Linear], actorder: static, dampening_frac: 0.1}
""")
    assert rules == [
        {"name": "test_stage.obcq_modifiers.SparseGPTModifier.ignore[0]", "tensor_regex": "^(?:.*lm_head)",
         "method": "none"},
        {"name": "test_stage.obcq_modifiers.SparseGPTModifier", "tensor_regex": r"^(?:model.layers.\d+)(?:\.|$)",
         "method": "sparsegpt", "options": {"block_size": 64, "dampening": 0.05, "n": 2, "m": 4}},
        {"name": "test_stage.quant_modifiers.GPTQModifier", "tensor_regex": ".", "method": "gptq",
         "options": {"bits": 8, "group_size": 0, "symmetric": True, "dampening": 0.1, "act_order": True}},
    ]


def test_a_recipe_whose_targets_match_nothing_is_invalid_argument(strict_client, folder):
    recipe = {"s": {"m_modifiers": {"MagnitudePruningModifier": {"sparsity": 0.5, "targets": ["re:decoder"]}}}}
    with pytest.raises(bonsai.BonsaiError) as info:
        strict_client.compress(str(folder), recipe=recipe)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "no rule matches any of the" in info.value.message and "^(?:decoder)" in info.value.message
