"""Strict checks of rendered Kubernetes objects against the API's own types.

The types are the model classes of Debian's python3-kubernetes (its
`openapi_types` and `attribute_map`, generated from the Kubernetes OpenAPI
spec): an unknown field, a value of the wrong type or a missing required field
is an error, as `kubectl apply --validate=strict` would make it.

That client (22.6) follows Kubernetes 1.22, older than the chart's floor of
1.24, so two later additions are filled in from the 1.24 API reference:
Probe.grpc (GRPCAction: port int32 required, service string), and
autoscaling/v2, which kept the fields of autoscaling/v2beta2 unchanged when it
became GA, so it is checked with v2beta2's classes. The Prometheus Operator's
ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1) are custom
resources, checked against the subset of their CRD schema that the chart uses.
"""
from __future__ import annotations

import inspect
import re
from typing import Dict, List, Tuple

import kubernetes.client.models as models

KINDS = {
    ("apps/v1", "Deployment"): "V1Deployment",
    ("v1", "Service"): "V1Service",
    ("v1", "ServiceAccount"): "V1ServiceAccount",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "ServiceMonitor",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "PrometheusRule",
}

# name -> {json field: (type, required)}, in the client's type notation.
CUSTOM: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "V1GRPCAction": {"port": ("int", True), "service": ("str", False)},
    "ServiceMonitor": {"apiVersion": ("str", True), "kind": ("str", True),
                       "metadata": ("V1ObjectMeta", True), "spec": ("ServiceMonitorSpec", True)},
    "ServiceMonitorSpec": {"selector": ("V1LabelSelector", True),
                           "namespaceSelector": ("NamespaceSelector", False),
                           "endpoints": ("list[Endpoint]", True), "jobLabel": ("str", False),
                           "targetLabels": ("list[str]", False), "podTargetLabels": ("list[str]", False)},
    "NamespaceSelector": {"any": ("bool", False), "matchNames": ("list[str]", False)},
    "Endpoint": {"port": ("str", False), "targetPort": ("object", False), "path": ("str", False),
                 "scheme": ("str", False), "interval": ("str", False), "scrapeTimeout": ("str", False),
                 "honorLabels": ("bool", False), "relabelings": ("list[object]", False),
                 "metricRelabelings": ("list[object]", False)},
    "PrometheusRule": {"apiVersion": ("str", True), "kind": ("str", True),
                       "metadata": ("V1ObjectMeta", True), "spec": ("PrometheusRuleSpec", True)},
    "PrometheusRuleSpec": {"groups": ("list[RuleGroup]", True)},
    "RuleGroup": {"name": ("str", True), "interval": ("str", False), "rules": ("list[Rule]", True)},
    "Rule": {"alert": ("str", False), "record": ("str", False), "expr": ("str", True),
             "for": ("str", False), "labels": ("dict(str, str)", False),
             "annotations": ("dict(str, str)", False)},
}
EXTRA_FIELDS = {"V1Probe": {"grpc": ("V1GRPCAction", False)}}

_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
_fields_cache: Dict[str, Dict[str, Tuple[str, bool]]] = {}


def fields_of(type_name: str) -> Dict[str, Tuple[str, bool]]:
    """{json field name: (type, required)} of a model class or custom type."""
    if type_name in CUSTOM:
        return CUSTOM[type_name]
    if type_name not in _fields_cache:
        cls = getattr(models, type_name)
        # Generated setters refuse None for required fields; that text is the
        # only place the client records which fields are required.
        required = set(_REQUIRED.findall(inspect.getsource(cls)))
        fields = {cls.attribute_map[attr]: (typ, attr in required)
                  for attr, typ in cls.openapi_types.items()}
        fields.update(EXTRA_FIELDS.get(type_name, {}))
        _fields_cache[type_name] = fields
    return _fields_cache[type_name]


def _check(value, type_name: str, path: str, errors: List[str]) -> None:
    if value is None:
        return
    if type_name.startswith("list["):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, type_name[5:-1], f"{path}[{i}]", errors)
        return
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1:-1].strip()
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map, got {type(value).__name__}")
            return
        for k, v in value.items():
            if not isinstance(k, str):
                errors.append(f"{path}: key {k!r} is not a string")
            _check(v, inner, f"{path}.{k}", errors)
        return
    simple = {"str": (str,), "datetime": (str,), "date": (str,), "bool": (bool,),
              "int": (int,), "float": (int, float)}
    if type_name in simple:
        ok = isinstance(value, simple[type_name])
        if type_name in ("int", "float") and isinstance(value, bool):
            ok = False
        if not ok:
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__} {value!r}")
        return
    if type_name == "object":  # IntOrString, raw extensions: any JSON value
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name}), got {type(value).__name__}")
        return
    fields = fields_of(type_name)
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
            continue
        _check(item, fields[key][0], f"{path}.{key}", errors)
    for key, (_, required) in fields.items():
        if required and value.get(key) is None:
            errors.append(f"{path}.{key}: required field of {type_name} is missing")


def validate(obj: dict) -> List[str]:
    """Every error of one object; [] when the API server would take it."""
    if not isinstance(obj, dict):
        return [f"not an object: {obj!r}"]
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in KINDS:
        return [f"unknown apiVersion/kind {key}"]
    errors: List[str] = []
    _check(obj, KINDS[key], obj["kind"], errors)
    return errors
