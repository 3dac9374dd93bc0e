"""Builds CompressionSpec / InspectSpec messages from Python values.

Only types are checked here; ranges and names (sparsity in [0, 1), known
methods, valid regexes) are the server's to judge, so that one place decides
and its messages reach the user unchanged. The exception is an option the
chosen method does not read: the wire has no place for it (each method's
options are a message of their own), so it is refused here, as the same
InvalidSpec the server would raise.
"""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional, Tuple, Union

import grpc

from bonsai import errors
from bonsai.v1 import compressor_pb2 as pb

_SCOPES = {"layer": pb.SCOPE_LAYER, "global": pb.SCOPE_GLOBAL, None: pb.SCOPE_UNSPECIFIED}
_NORMS = {"l1": pb.NORM_L1, "l2": pb.NORM_L2, None: pb.NORM_UNSPECIFIED}
_MODES = {"mask": pb.STRUCTURED_MODE_MASK, "physical": pb.STRUCTURED_MODE_PHYSICAL,
          None: pb.STRUCTURED_MODE_UNSPECIFIED}
_OUTPUTS = {"dense": pb.OUTPUT_MODE_DENSE, "packed": pb.OUTPUT_MODE_PACKED, None: pb.OUTPUT_MODE_UNSPECIFIED}
_QUANTIZED_LAYOUTS = {"compressed-tensors": pb.QUANTIZED_LAYOUT_COMPRESSED_TENSORS, "gptq": pb.QUANTIZED_LAYOUT_GPTQ,
                      None: pb.QUANTIZED_LAYOUT_UNSPECIFIED}
# Users give a method's options as one flat mapping ({"n": 2, "m": 4},
# {"bits": 4, "group_size": 128}), as they always have; the wire carries them
# in the method's own message, MethodOptions.<method> (e.g.
# options.sparsegpt.quant.bits). Where each name goes is read from the proto,
# so an option added there needs no change here. The one flat name that is
# not its field's: structured's `structured_mode` is StructuredOptions.mode.
_FLAT_NAMES = {"mode": "structured_mode"}


def _leaf_paths(message_type, prefix=()) -> Dict[str, Tuple[str, ...]]:
    paths: Dict[str, Tuple[str, ...]] = {}
    for field in message_type.fields:
        if field.message_type is not None:
            paths.update(_leaf_paths(field.message_type, prefix + (field.name,)))
        else:
            paths[_FLAT_NAMES.get(field.name, field.name)] = prefix + (field.name,)
    return paths


# method -> flat option name -> field path inside MethodOptions.<method>
_OPTION_PATHS = {field.name: _leaf_paths(field.message_type)
                 for field in pb.MethodOptions.DESCRIPTOR.oneofs_by_name["method"].fields}
_OPTION_FIELDS = tuple(dict.fromkeys(name for paths in _OPTION_PATHS.values() for name in paths))
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


def method_options(method: str, options: Union[None, Mapping, pb.MethodOptions],
                   where: str = "") -> pb.MethodOptions:
    """`options` (flat names, as compress takes them) in `method`'s own
    message. A name no method has is a TypeError; one that `method` does not
    read is InvalidSpec as the server would raise it (prefixed with `where`,
    e.g. "attn: "), since the wire has no place for it. None values are left
    unset; group_size is a proto3 `optional`, so 0 is sent (one grid per
    output channel) and told apart from unset (128)."""
    if isinstance(options, pb.MethodOptions):
        return options
    given = {key: value for key, value in (options or {}).items() if value is not None}
    for key in given:
        if key not in _OPTION_FIELDS:
            raise TypeError(f"unknown method option {key!r}; expected one of: {', '.join(_OPTION_FIELDS)}")
    message = pb.MethodOptions()
    if not given:
        return message
    paths = _OPTION_PATHS.get(method)
    unread = [key for key in given if paths is None or key not in paths]
    if unread:
        raise _unread_option(where, method, unread[0], paths)
    own = getattr(message, method)
    own.SetInParent()  # present even when every value given is a proto3 default
    for key, value in given.items():
        *parents, leaf = paths[key]
        target = own
        for name in parents:
            target = getattr(target, name)
        if key == "norm":
            value = _enum(_NORMS, value, "norm")
        elif key == "structured_mode":
            value = _enum(_MODES, value, "structured mode")
        setattr(target, leaf, value)
    return message


def _unread_option(where: str, method: str, key: str, paths) -> errors.InvalidSpec:
    if not method:
        text = (f"option {key!r} needs a method: with rules, give options in each rule "
                "(the spec's own would be ignored)")
    else:
        reads = (f"it reads {', '.join(paths)}" if paths
                 else f"it takes none; the methods with options are {', '.join(_OPTION_PATHS)}")
        readers = ", ".join(name for name, names in _OPTION_PATHS.items() if key in names)
        text = (f"method '{method}' does not read option {key!r} ({reads}); remove it, or choose "
                f"a method that reads it ({readers}; see GetCapabilities)")
    return errors.InvalidSpec(grpc.StatusCode.INVALID_ARGUMENT, where + text, reason="INVALID_SPEC")


def rule(value: Union[Mapping, pb.Rule], index: int = 0) -> pb.Rule:
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
    where = f"{message.name or f'rule[{index}]'}: "  # as the server names rules
    message.options.CopyFrom(method_options(message.method, fields.get("options"), where))
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
    spec.options.CopyFrom(method_options(method, options))
    spec.rules.extend(rule(r, i) for i, r in enumerate(rules or ()))
    return spec


def inspect_spec(*, include: Iterable[str], exclude: Iterable[str],
                 files: Iterable[pb.FileDeclaration]) -> pb.InspectSpec:
    return pb.InspectSpec(include=list(include or ()), exclude=list(exclude or ()), files=list(files))
