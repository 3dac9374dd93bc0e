"""Builds CompressionSpec / InspectSpec messages from Python values.

Only types are checked here; ranges and names (sparsity in [0, 1), known
methods, valid regexes) are the server's to judge, so that one place decides
and its messages reach the user unchanged.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Union

from bonsai.v1 import compressor_pb2 as pb

_SCOPES = {"layer": pb.SCOPE_LAYER, "global": pb.SCOPE_GLOBAL, None: pb.SCOPE_UNSPECIFIED}
_NORMS = {"l1": pb.NORM_L1, "l2": pb.NORM_L2, None: pb.NORM_UNSPECIFIED}
_MODES = {"mask": pb.STRUCTURED_MODE_MASK, "physical": pb.STRUCTURED_MODE_PHYSICAL,
          None: pb.STRUCTURED_MODE_UNSPECIFIED}
_OUTPUTS = {"dense": pb.OUTPUT_MODE_DENSE, "packed": pb.OUTPUT_MODE_PACKED, None: pb.OUTPUT_MODE_UNSPECIFIED}
_QUANTIZED_LAYOUTS = {"compressed-tensors": pb.QUANTIZED_LAYOUT_COMPRESSED_TENSORS, "gptq": pb.QUANTIZED_LAYOUT_GPTQ,
                      None: pb.QUANTIZED_LAYOUT_UNSPECIFIED}
# group_size is a proto3 `optional`: setting it, to 0 too, marks it present
# (0: one grid per output channel); leaving it out (or None) means 128.
_OPTION_FIELDS = ("n", "m", "norm", "structured_mode", "block_size", "dampening", "per_channel",
                  "bits", "group_size", "symmetric", "act_order")
_RULE_FIELDS = ("tensor_regex", "method", "sparsity", "scope", "options", "name")


def _enum(table: dict, value, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # already the protobuf enum number
    key = value.lower() if isinstance(value, str) else value
    if key not in table:
        names = ", ".join(k for k in table if k)
        raise ValueError(f"unknown {what} {value!r}; expected one of: {names}")
    return table[key]


def scope_enum(value) -> int:
    return _enum(_SCOPES, value, "scope")


def output_enum(value) -> int:
    return _enum(_OUTPUTS, value, "output")


def method_options(options: Union[None, Mapping, pb.MethodOptions]) -> pb.MethodOptions:
    if isinstance(options, pb.MethodOptions):
        return options
    message = pb.MethodOptions()
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key not in _OPTION_FIELDS:
            raise TypeError(f"unknown method option {key!r}; expected one of: {', '.join(_OPTION_FIELDS)}")
        if key == "norm":
            value = _enum(_NORMS, value, "norm")
        elif key == "structured_mode":
            value = _enum(_MODES, value, "structured mode")
        setattr(message, key, value)
    return message


def rule(value: Union[Mapping, pb.Rule]) -> pb.Rule:
    if isinstance(value, pb.Rule):
        return value
    fields = dict(value)
    if "regex" in fields:  # a friendlier alias
        fields["tensor_regex"] = fields.pop("regex")
    unknown = set(fields) - set(_RULE_FIELDS)
    if unknown:
        raise TypeError(f"unknown rule field(s) {sorted(unknown)}; expected: {', '.join(_RULE_FIELDS)}")
    message = pb.Rule(tensor_regex=fields.get("tensor_regex", ""), method=fields.get("method", ""),
                      sparsity=float(fields.get("sparsity", 0.0)), name=fields.get("name", ""))
    message.scope = scope_enum(fields.get("scope"))
    message.options.CopyFrom(method_options(fields.get("options")))
    return message


def compression_spec(
    *,
    method: str,
    sparsity: float,
    scope,
    include: Iterable[str],
    exclude: Iterable[str],
    include_only: bool,
    overrides: Optional[Mapping[str, float]],
    options,
    rules: Iterable,
    output,
    files: Iterable[pb.FileDeclaration],
    calibration_size_bytes: Optional[int],
    quantized_layout=None,
) -> pb.CompressionSpec:
    spec = pb.CompressionSpec(
        method=method,
        sparsity=float(sparsity),
        scope=scope_enum(scope),
        include=list(include or ()),
        exclude=list(exclude or ()),
        include_only=bool(include_only),
        files=list(files),
        calibration_size_bytes=calibration_size_bytes or 0,
        output=output_enum(output),
        quantized_layout=_enum(_QUANTIZED_LAYOUTS, quantized_layout, "quantized layout"),
    )
    for name, value in (overrides or {}).items():
        spec.sparsity_overrides[name] = float(value)
    spec.options.CopyFrom(method_options(options))
    spec.rules.extend(rule(r) for r in rules or ())
    return spec


def inspect_spec(*, include: Iterable[str], exclude: Iterable[str],
                 files: Iterable[pb.FileDeclaration]) -> pb.InspectSpec:
    return pb.InspectSpec(include=list(include or ()), exclude=list(exclude or ()), files=list(files))
