"""Recipes from files: bonsai's own rules (JSON or YAML) and llm-compressor's
recipe YAML, both turned into the rule dicts `Client.compress(rules=...)` takes.

llm-compressor recipes name modules of a PyTorch model; bonsai sees the
tensors of a checkpoint. The mapping, done here in the client so that the
server keeps one rule language:

- each modifier becomes one rule (one per target when `sparsity` is a list),
  in the recipe's order; as in all bonsai rules, the first rule that matches a
  tensor wins;
- `targets`: a layer class name (`Linear`, `Conv1d`, `Conv2d`, `Conv3d`) or
  `ALL` means the tensors bonsai selects by default (floating tensors of rank
  >= 2 that are not embeddings, in ONNX the weights of Conv/Gemm/MatMul); a
  `re:PATTERN` is matched, as llm-compressor does, from the start of a module
  name, and a tensor belongs to a module when its name is the module's name
  followed by `.` (so `re:model.layers.\\d+$` covers
  `model.layers.0.mlp.up_proj.weight`); a plain name matches that module
  wherever it sits (`lm_head`, `mlp.gate`);
- `ignore`: the same patterns, as rules of method `none` placed before the
  modifier's rule (they keep those tensors dense for later modifiers too);
- `mask_structure: "N:M"` gives options n and m (MagnitudePruningModifier
  becomes method `nm`); `"0:0"` or `unstructured` is unstructured;
- `scheme: W4A16` is 4 bits, symmetric, groups of 128; `W8A16` is 8 bits,
  symmetric, one grid per output channel (`_ASYM` variants are asymmetric);
  QuantizationModifier becomes `rtn` and GPTQModifier `gptq`.

A modifier or a field bonsai does not implement raises RecipeError naming it;
nothing in a recipe is ignored. Fields whose value is null are absent.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Union

RecipeSource = Union[str, os.PathLike, Mapping]


class RecipeError(ValueError):
    """A recipe or rules file that bonsai cannot run as written."""


# --------------------------------------------------------------- bonsai rules

def load_rules(source: RecipeSource) -> List[dict]:
    """Rules from a JSON or YAML file (or its parsed value): a list of rules,
    or a mapping {"rules": [...]}."""
    data = _load(source)
    if isinstance(data, Mapping) and "rules" in data:
        extra = sorted(set(data) - {"rules"})
        if extra:
            raise RecipeError(f"rules file: unknown top-level key(s) {extra}; expected only 'rules'")
        data = data["rules"]
    elif isinstance(data, Mapping) and _looks_like_llmcompressor(data):
        raise RecipeError("this is an llm-compressor recipe (stages and modifiers), not a list of "
                          "rules: pass it with --recipe (library: recipe=...)")
    if not isinstance(data, list) or not all(isinstance(r, Mapping) for r in data):
        raise RecipeError("rules file: expected a list of rules (each a mapping with tensor_regex, "
                          "method, sparsity, ...) or {\"rules\": [...]}")
    return [dict(r) for r in data]


# ------------------------------------------------------------- llm-compressor

_PRUNING = {"SparseGPTModifier": "sparsegpt", "WandaPruningModifier": "wanda",
            "MagnitudePruningModifier": "magnitude"}
_QUANTIZATION = {"QuantizationModifier": "rtn", "GPTQModifier": "gptq"}
# scheme -> (bits, group_size, symmetric)
_SCHEMES = {"W4A16": (4, 128, True), "W4A16_ASYM": (4, 128, False),
            "W8A16": (8, 0, True), "W8A16_ASYM": (8, 0, False)}
_LAYER_CLASSES = {"Linear", "Conv1d", "Conv2d", "Conv3d", "ALL", "__ALL__"}

# Fields each modifier reads. A field listed with a value is accepted only
# with that value (it asks for nothing bonsai would do differently).
_COMMON = {"targets", "ignore"}
_FIELDS = {
    "SparseGPTModifier": _COMMON | {"sparsity", "mask_structure", "block_size", "dampening_frac",
                                    "percdamp", "sequential_targets"},
    "WandaPruningModifier": _COMMON | {"sparsity", "mask_structure", "sequential_targets"},
    "MagnitudePruningModifier": _COMMON | {"sparsity", "final_sparsity", "init_sparsity", "start",
                                           "end", "update", "leave_enabled", "mask_structure"},
    "QuantizationModifier": _COMMON | {"scheme"},
    "GPTQModifier": _COMMON | {"scheme", "block_size", "dampening_frac", "actorder"},
}
_NEUTRAL = {"sequential_update": False, "quantize": False, "preserve_sparsity_mask": False,
            "offload_hessians": False, "sparsity_profile": None}


def from_llmcompressor(source: RecipeSource) -> List[dict]:
    """The bonsai rules for an llm-compressor recipe: a YAML file, YAML text,
    or its parsed mapping."""
    data = _load(source)
    if not isinstance(data, Mapping):
        raise RecipeError("recipe: expected a mapping of stages (e.g. `oneshot_stage:`) holding "
                          "`*_modifiers:` mappings of modifier names to their fields")
    rules: List[dict] = []
    for stage, modifiers in _modifier_groups(data):
        for name, fields in modifiers:
            rules.extend(_modifier_rules(stage, name, fields))
    if not rules:
        raise RecipeError("recipe: no modifier found; expected e.g. "
                          "`oneshot_stage: {pruning_modifiers: {SparseGPTModifier: {sparsity: 0.5}}}`")
    return rules


def _looks_like_llmcompressor(data: Mapping) -> bool:
    return any(str(k).endswith(("_stage", "stage", "modifiers")) for k in data)


def _modifier_groups(data: Mapping):
    """(where, [(modifier name, fields)]) for every modifiers group, in order."""
    for key, value in data.items():
        key = str(key)
        if key == "version":
            continue
        if key.endswith("modifiers"):
            yield key, _modifier_list(key, value)
        elif isinstance(value, Mapping):
            for group, modifiers in value.items():
                where = f"{key}.{group}"
                if group == "run_type" and modifiers == "oneshot":
                    continue  # what bonsai does anyway
                if str(group).endswith("modifiers"):
                    yield where, _modifier_list(where, modifiers)
                else:
                    raise RecipeError(f"recipe: {where} is not implemented by bonsai (a stage holds "
                                      f"`*_modifiers:` groups; bonsai runs them once, in one job)")
        else:
            raise RecipeError(f"recipe: top-level key {key!r} is neither a stage nor a modifiers group")


def _modifier_list(where: str, value) -> list:
    if isinstance(value, Mapping):
        return [(str(k), v) for k, v in value.items()]
    if isinstance(value, list):  # the list form: [{SparseGPTModifier: {...}}, ...]
        out = []
        for item in value:
            if not isinstance(item, Mapping) or len(item) != 1:
                raise RecipeError(f"recipe: {where}: each entry must be {{ModifierName: fields}}")
            out.extend((str(k), v) for k, v in item.items())
        return out
    raise RecipeError(f"recipe: {where}: expected a mapping of modifier names to fields")


def _modifier_rules(stage: str, name: str, fields) -> List[dict]:
    where = f"{stage}.{name}"
    if name not in _FIELDS:
        known = ", ".join(sorted(_FIELDS))
        raise RecipeError(f"recipe: modifier {name} ({where}) is not implemented by bonsai; "
                          f"it implements: {known}")
    fields = {str(k): v for k, v in (fields or {}).items() if v is not None}
    for key, value in list(fields.items()):
        if key in _FIELDS[name]:
            continue
        if key in _NEUTRAL and value == _NEUTRAL[key]:
            del fields[key]
            continue
        detail = ""
        if key == "sequential_update":
            detail = (" (bonsai's calibration statistics come from the uncompressed model in one "
                      "pass; set it to false)")
        raise RecipeError(f"recipe: {where}: field {key}: {value!r} is not implemented by bonsai{detail}")

    targets = _as_list(fields.get("targets", fields.get("sequential_targets", "ALL")), where, "targets")
    ignore = _as_list(fields.get("ignore", []), where, "ignore")
    rules = [{"name": f"{where}.ignore[{i}]", "tensor_regex": _tensor_regex(p, where, "ignore"),
              "method": "none"} for i, p in enumerate(ignore)]
    if name in _PRUNING:
        rules.extend(_pruning_rules(where, name, fields, targets))
    else:
        rules.extend(_quantization_rules(where, name, fields, targets))
    return rules


def _pruning_rules(where: str, name: str, fields: dict, targets: List[str]) -> List[dict]:
    options: Dict[str, Any] = {}
    n, m = _mask_structure(fields.get("mask_structure"), where)
    method = _PRUNING[name]
    if name == "MagnitudePruningModifier":
        start, end = fields.get("start"), fields.get("end")
        if start is not None and end is not None and start != end:
            raise RecipeError(f"recipe: {where}: gradual pruning from start {start} to end {end} "
                              f"is training-time pruning, which bonsai does not do; set start "
                              f"equal to end (one-shot)")
        if "sparsity" in fields and "final_sparsity" in fields:
            raise RecipeError(f"recipe: {where}: give sparsity or final_sparsity, not both")
        sparsity = fields.get("sparsity", fields.get("final_sparsity"))
        if n:
            method = "nm"
    else:
        sparsity = fields.get("sparsity")
        if "block_size" in fields:
            options["block_size"] = int(fields["block_size"])
        damp = fields.get("dampening_frac", fields.get("percdamp"))
        if damp is not None:
            options["dampening"] = float(damp)
    if n:
        options["n"], options["m"] = n, m
    if sparsity is None and not n:
        raise RecipeError(f"recipe: {where}: sparsity is required (or a mask_structure such as \"2:4\")")
    sparsities = sparsity if isinstance(sparsity, list) else [sparsity] * len(targets)
    if len(sparsities) != len(targets):
        raise RecipeError(f"recipe: {where}: sparsity lists {len(sparsities)} values for "
                          f"{len(targets)} targets; give one value, or one per target")
    if n:
        for s in sparsities:
            if s is not None and abs(float(s) - (1 - n / m)) > 1e-9:
                raise RecipeError(f"recipe: {where}: sparsity {s} disagrees with mask_structure "
                                  f"\"{n}:{m}\" (which gives {1 - n / m:g})")
    rules = []
    for target, s in _group_targets(where, targets, sparsities):
        rule = {"name": where, "tensor_regex": target, "method": method}
        if not n:
            rule["sparsity"] = float(s)
        if options:
            rule["options"] = dict(options)
        rules.append(rule)
    return rules


def _quantization_rules(where: str, name: str, fields: dict, targets: List[str]) -> List[dict]:
    scheme = fields.get("scheme")
    if scheme is None:
        raise RecipeError(f"recipe: {where}: scheme is required (bonsai implements "
                          f"{', '.join(_SCHEMES)})")
    if not isinstance(scheme, str) or scheme.upper() not in _SCHEMES:
        raise RecipeError(f"recipe: {where}: scheme {scheme!r} is not implemented by bonsai "
                          f"(weights only, integer: {', '.join(_SCHEMES)})")
    bits, group_size, symmetric = _SCHEMES[scheme.upper()]
    options: Dict[str, Any] = {"bits": bits, "group_size": group_size}
    if symmetric:
        options["symmetric"] = True
    if name == "GPTQModifier":
        if "block_size" in fields:
            options["block_size"] = int(fields["block_size"])
        if "dampening_frac" in fields:
            options["dampening"] = float(fields["dampening_frac"])
        actorder = fields.get("actorder")
        if actorder in ("static", "weight", True):
            options["act_order"] = True
        elif actorder not in (None, False):
            raise RecipeError(f"recipe: {where}: actorder {actorder!r} is not implemented by bonsai "
                              f"(static: columns by decreasing Hessian diagonal, groups in natural "
                              f"order; or leave it unset)")
    return [{"name": where, "tensor_regex": t, "method": _QUANTIZATION[name], "options": dict(options)}
            for t, _ in _group_targets(where, targets, [None] * len(targets))]


def _group_targets(where: str, targets: List[str], sparsities: list) -> list:
    """One rule per distinct sparsity, its patterns joined with `|`."""
    out: list = []
    for target, s in zip(targets, sparsities):
        regex = _tensor_regex(target, where, "targets")
        for entry in out:
            if entry[1] == s:
                entry[0] = f"{entry[0]}|{regex}" if regex != "." and entry[0] != "." else "."
                break
        else:
            out.append([regex, s])
    return [tuple(e) for e in out]


def _tensor_regex(pattern: str, where: str, field: str) -> str:
    """An RE2 pattern searched in tensor names for one llm-compressor target."""
    if pattern in _LAYER_CLASSES:
        return "."  # bonsai's default selection decides which tensors are layers' weights
    if pattern.startswith("re:"):
        body = pattern[3:]
        try:
            re.compile(body)
        except re.error as err:
            raise RecipeError(f"recipe: {where} {field}: {pattern!r} does not compile: {err}") from None
        # re.match from the start of a module name; a tensor is the module's
        # name plus ".weight" (or ".bias", ...), so an end anchor also allows
        # a following ".".
        if body.endswith("$") and not body.endswith("\\$"):
            return f"^(?:{body[:-1]})(?:\\.|$)"
        return f"^(?:{body})"
    if pattern[:1].isupper() and re.fullmatch(r"[A-Za-z0-9_]+", pattern):
        raise RecipeError(f"recipe: {where} {field}: layer class {pattern!r} is not one bonsai can "
                          f"tell from a checkpoint (it knows {', '.join(sorted(_LAYER_CLASSES))}); "
                          f"use a 're:' pattern on module names")
    return f"(?:^|\\.){re.escape(pattern)}(?:\\.|$)"


def _mask_structure(value, where: str):
    if value is None or value in ("0:0", "unstructured"):
        return 0, 0
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(value))
    if not match:
        raise RecipeError(f"recipe: {where}: mask_structure {value!r} is not implemented by bonsai "
                          f"(\"N:M\" such as \"2:4\", \"0:0\" or \"unstructured\")")
    n, m = int(match.group(1)), int(match.group(2))
    if n == 0 and m == 0:
        return 0, 0
    return n, m


def _as_list(value, where: str, field: str) -> List[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise RecipeError(f"recipe: {where}: {field} must be a name or a list of names")
    return items


def _load(source: RecipeSource):
    if isinstance(source, Mapping) or isinstance(source, list):
        return source
    text = None
    path = os.fspath(source)
    if "\n" in path or not os.path.exists(path):
        if "\n" not in path:
            raise RecipeError(f"{path}: no such file")
        text = path
    else:
        if os.path.isdir(path):
            raise RecipeError(f"{path}: is a folder; expected a JSON or YAML file")
        with open(path, encoding="utf-8") as f:
            text = f.read()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        import yaml  # Debian: python3-yaml
    except ImportError:  # pragma: no cover - a deployment without PyYAML
        raise RecipeError("reading YAML needs PyYAML (Debian: python3-yaml)") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{'recipe' if text is path else path}: not valid JSON or YAML: {err}") from None
