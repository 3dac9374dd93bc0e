"""The Helm chart, rendered and checked against the real things.

Helm cannot be installed here, so deploy/helm/render (Go's text/template with
sprig, plus Helm's include/tpl/toYaml/fromYaml/required/.Files) renders the
chart for the default values and for each ci/*-values.yaml scenario. Every
object is checked against the Kubernetes API's types (k8s_schema.py: unknown
fields, wrong types and missing required fields fail); values against
values.schema.json; and the flags, ports and probes against a real
bonsai-server started with the rendered arguments.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request

import grpc
import jsonschema
import pytest
import yaml

import k8s_schema
from prometheus_process import promtool
from server_process import BonsaiServer, free_port, server_binary
from tls_certs import make_pki

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(REPO, "deploy", "helm", "bonsai")
RENDERER = os.path.join(REPO, "deploy", "helm", "render")
SCENARIOS = ["default"] + sorted(os.path.basename(p) for p in glob.glob(os.path.join(CHART, "ci", "*-values.yaml")))
OPTIONAL_KINDS = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule",
                  "ConfigMap", "NetworkPolicy", "ServiceAccount"}
MIB = 1 << 20


# ---------------------------------------------------------------- rendering

@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    go = shutil.which("go")
    assert go, "Go is missing: deploy/install-deps.sh installs golang-go and sprig"
    out = str(tmp_path_factory.mktemp("render") / "render")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               GOCACHE=os.path.join(REPO, ".cache", "go-build"))
    result = subprocess.run([go, "build", "-o", out, "."], cwd=RENDERER, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return out


def render(renderer, values_files=(), name="demo", namespace="ml") -> dict:
    args = [renderer, "-chart", CHART, "-name", name, "-namespace", namespace]
    for path in values_files:
        args += ["-values", path]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    out = json.loads(result.stdout)
    out["objects"] = [yaml.safe_load(m["content"]) for m in out["manifests"]]
    return out


def scenario_files(scenario: str) -> list:
    return [] if scenario == "default" else [os.path.join(CHART, "ci", scenario)]


def merged_values(scenario: str) -> dict:
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    for path in scenario_files(scenario):
        with open(path) as f:
            _merge(values, yaml.safe_load(f) or {})
    return values


def _merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        elif v is None:
            dst.pop(k, None)
        else:
            dst[k] = v


@pytest.fixture(scope="module")
def rendered(renderer):
    return {s: render(renderer, scenario_files(s)) for s in SCENARIOS}


def objects(out: dict, kind: str) -> list:
    return [o for o in out["objects"] if o["kind"] == kind]


def one(out: dict, kind: str) -> dict:
    found = objects(out, kind)
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def deployment_container(out: dict) -> dict:
    return one(out, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def flag_values(container: dict) -> dict:
    out = {}
    for arg in container["args"]:
        name, _, value = arg[2:].partition("=")
        out[name] = value
    return out


def parse_quantity(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "k": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    return int(float(m.group(1)) * units.get(m.group(2), 1))


# ---------------------------------------------------------------- the strict walker

def test_strict_walker_rejects_unknown_fields_wrong_types_and_missing_required():
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"},
           "spec": {"selector": {}, "template": {"spec": {"containers": [
               {"image": "i", "imagePolicy": "Always", "ports": [{"containerPort": "80"}],
                "readinessProbe": {"grpc": {"service": ""}}}]}}}}
    errors = "\n".join(k8s_schema.validate(bad))
    assert "imagePolicy: unknown field" in errors
    assert "containerPort: expected int" in errors
    assert "containers[0].name: required field" in errors
    assert "grpc.port: required field" in errors


# ---------------------------------------------------------------- values

def test_values_yaml_documents_every_value():
    with open(os.path.join(CHART, "values.yaml")) as f:
        text = f.read()
    documented = set(re.findall(r"^\s*## @param ([\w.]+) \S", text, re.M))

    def leaves(node, prefix=""):
        if isinstance(node, dict) and node:
            for k, v in node.items():
                yield from leaves(v, f"{prefix}{k}.") if f"{prefix}{k}" not in documented else [f"{prefix}{k}"]
        else:
            yield prefix.rstrip(".")
    undocumented = [p for p in leaves(yaml.safe_load(text)) if p not in documented]
    assert not undocumented, f"values without a '## @param' line: {undocumented}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_values_match_the_schema(scenario):
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(merged_values(scenario), schema)


@pytest.mark.parametrize("change", [
    {"server": {"workers": "two"}},
    {"server": {"workers": 0}},
    {"replicas": 3},
    {"image": {"pullPolicy": "Sometimes"}},
    {"containerPorts": {"grpc": 70000}},
    {"resources": {"limits": {"memory": "lots"}}},
    {"metrics": {"serviceMonitor": {"enabled": "yes"}}},
    {"server": {"extraArgs": ["not-a-flag"]}},
    {"tls": {"enabled": True}},
    {"tls": {"mutual": True}},
    {"tls": {"enabled": True, "secretName": "Not_A_Name"}},
    {"tls": {"enable": True}},
], ids=lambda c: json.dumps(c))
def test_schema_rejects_wrong_values(change):
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    values = merged_values("default")
    _merge(values, copy.deepcopy(change))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, schema)


# ---------------------------------------------------------------- objects

@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_matches_the_kubernetes_api(rendered, scenario):
    out = rendered[scenario]
    assert out["objects"], "nothing rendered"
    errors = []
    for manifest, obj in zip(out["manifests"], out["objects"]):
        errors += [f"{manifest['source']}: {e}" for e in k8s_schema.validate(obj)]
        name = obj["metadata"]["name"]
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
            errors.append(f"{manifest['source']}: bad name {name!r}")
        for k, v in obj["metadata"].get("labels", {}).items():
            if not isinstance(v, str) or len(v) > 63 or not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", v):
                errors.append(f"{manifest['source']}: bad label value {k}={v!r}")
    assert not errors, "\n".join(errors)


def test_each_optional_object_has_one_switch(rendered):
    default_kinds = {o["kind"] for o in rendered["default"]["objects"]}
    assert default_kinds == {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"}
    full_kinds = {o["kind"] for o in rendered["all-features-values.yaml"]["objects"]}
    assert OPTIONAL_KINDS <= full_kinds
    minimal_kinds = [o["kind"] for o in rendered["minimal-values.yaml"]["objects"]]
    assert sorted(minimal_kinds) == ["Deployment", "Service"]
    assert len(objects(rendered["default"], "Service")) == 2  # plus the headless one


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_pod_security_is_restricted(rendered, scenario):
    pod = one(rendered[scenario], "Deployment")["spec"]["template"]["spec"]
    c = deployment_container(rendered[scenario])
    sc = c["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    tmp = [v for v in pod["volumes"] if v["name"] == "tmp"][0]
    assert "emptyDir" in tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_grace_period_spool_and_memory_follow_the_documented_rules(rendered, scenario):
    pod = one(rendered[scenario], "Deployment")["spec"]["template"]["spec"]
    container = deployment_container(rendered[scenario])
    flags = flag_values(container)
    assert pod["terminationGracePeriodSeconds"] > int(flags["shutdown_grace_seconds"])
    # Uploads and outputs go to a spool emptyDir whose budget is 9/10 of its size.
    spool = [v for v in pod["volumes"] if v["name"] == "spool"][0]
    size = parse_quantity(str(spool["emptyDir"]["sizeLimit"]))
    assert {"name": "spool", "mountPath": flags["spool_dir"]} in container["volumeMounts"]
    assert int(flags["max_spool_bytes"]) == size * 9 // 10
    # Jobs are admitted by memory: by default from the pod's own limit (0).
    assert int(flags["max_memory_bytes"]) >= 0
    assert "max_memory_bytes" in rendered[scenario]["notes"]


def test_grace_period_shorter_than_the_servers_is_refused(renderer, tmp_path):
    values = tmp_path / "bad.yaml"
    values.write_text("server:\n  shutdownGraceSeconds: 60\nterminationGracePeriodSeconds: 30\n")
    with pytest.raises(RuntimeError, match="must exceed"):
        render(renderer, [str(values)])


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_services_probes_and_monitors_point_at_named_ports(rendered, scenario):
    out = rendered[scenario]
    c = deployment_container(out)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert set(ports) == {"grpc", "metrics"}
    flags = flag_values(c)
    assert flags["listen"].rsplit(":", 1)[1] == str(ports["grpc"])
    assert flags["metrics_listen"].rsplit(":", 1)[1] == str(ports["metrics"])
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if kind in c:
            action = c[kind].get("grpc") or c[kind]["tcpSocket"]  # tcpSocket with TLS
            assert action["port"] == ports["grpc"], kind
    pod_labels = one(out, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for svc in objects(out, "Service"):
        assert all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items())
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, p
    for sm in objects(out, "ServiceMonitor"):
        service_ports = {p["name"] for s in objects(out, "Service") for p in s["spec"]["ports"]}
        assert all(e["port"] in service_ports for e in sm["spec"]["endpoints"])
    for np in objects(out, "NetworkPolicy"):
        for rule in np["spec"]["ingress"]:
            assert all(p["port"] in ports for p in rule["ports"])


def test_prometheus_rule_and_dashboard_are_the_shipped_files(rendered):
    out = rendered["all-features-values.yaml"]
    for shipped, copy_ in [("deploy/prometheus/bonsai-alerts.yaml", "files/bonsai-alerts.yaml"),
                           ("deploy/grafana/bonsai-dashboard.json", "files/bonsai-dashboard.json")]:
        with open(os.path.join(REPO, shipped)) as a, open(os.path.join(CHART, copy_)) as b:
            assert a.read() == b.read(), f"{copy_} differs from {shipped}: copy it again"
    with open(os.path.join(REPO, "deploy/prometheus/bonsai-alerts.yaml")) as f:
        assert one(out, "PrometheusRule")["spec"] == yaml.safe_load(f)
    cm = one(out, "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    with open(os.path.join(REPO, "deploy/grafana/bonsai-dashboard.json")) as f:
        assert json.loads(cm["data"]["bonsai-dashboard.json"]) == json.load(f)


def test_rendered_prometheus_rule_passes_promtool(rendered, tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(rendered["all-features-values.yaml"], "PrometheusRule")["spec"]))
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hpa_scales_on_cpu_and_optionally_queue_depth(rendered):
    hpa = one(rendered["all-features-values.yaml"], "HorizontalPodAutoscaler")
    kinds = [m["type"] for m in hpa["spec"]["metrics"]]
    assert kinds == ["Resource", "Pods"]
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "bonsai_jobs_queued"
    assert "replicas" not in one(rendered["all-features-values.yaml"], "Deployment")["spec"]
    hpa = one(rendered["open-network-values.yaml"], "HorizontalPodAutoscaler")
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource"]


# ---------------------------------------------------------------- TLS

TLS_DIR = "/etc/bonsai/tls"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


def test_tls_mounts_the_secret_read_only_and_passes_its_files_as_flags(rendered):
    out = rendered["tls-values.yaml"]
    pod = one(out, "Deployment")["spec"]["template"]["spec"]
    c = deployment_container(out)
    volume = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert volume == [{"name": "tls", "secret": {"secretName": "bonsai-tls", "defaultMode": 0o440}}]
    assert {"name": "tls", "mountPath": TLS_DIR, "readOnly": True} in c["volumeMounts"]
    flags = flag_values(c)
    assert flags["tls_cert_file"] == f"{TLS_DIR}/tls.crt"  # the names cert-manager writes
    assert flags["tls_key_file"] == f"{TLS_DIR}/tls.key"
    assert flags["tls_client_ca_file"] == f"{TLS_DIR}/ca.crt"


def test_tls_probes_are_tcp_checks_of_the_grpc_port(rendered):
    """The kubelet's gRPC probe speaks plaintext only: against a TLS port it
    would fail forever and the pods would never be ready."""
    c = deployment_container(rendered["tls-values.yaml"])
    grpc_port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
    for kind in PROBES:
        assert "grpc" not in c[kind], kind
        assert c[kind]["tcpSocket"] == {"port": grpc_port}, kind
    notes = rendered["tls-values.yaml"]["notes"]
    assert "--tls-ca ca.crt" in notes and "--tls-cert client.crt" in notes and "rollout restart" in notes


def test_tls_without_mutual_asks_for_no_client_certificates(renderer, tmp_path):
    values = tmp_path / "tls.yaml"
    values.write_text("tls:\n  enabled: true\n  secretName: bonsai-tls\n")
    out = render(renderer, [str(values)])
    flags = flag_values(deployment_container(out))
    assert flags["tls_cert_file"] == f"{TLS_DIR}/tls.crt" and "tls_client_ca_file" not in flags
    assert "--tls-ca ca.crt" in out["notes"] and "--tls-cert" not in out["notes"]


def test_tls_off_leaves_the_deployment_as_it_was(renderer, rendered, tmp_path):
    deployment = one(rendered["default"], "Deployment")
    c = deployment_container(rendered["default"])
    assert not any(a.startswith("--tls") for a in c["args"])
    assert all(v["name"] != "tls" for v in deployment["spec"]["template"]["spec"]["volumes"])
    assert all(m["name"] != "tls" for m in c["volumeMounts"])
    for kind in PROBES:
        assert set(c[kind]) >= {"grpc"} and "tcpSocket" not in c[kind], kind
    # A Secret named but TLS off changes nothing at all, to the byte.
    values = tmp_path / "off.yaml"
    values.write_text("tls:\n  enabled: false\n  secretName: bonsai-tls\n")
    assert render(renderer, [str(values)])["manifests"] == rendered["default"]["manifests"]


@pytest.mark.parametrize("values, message", [
    ("tls:\n  enabled: true\n", "tls.enabled needs tls.secretName"),
    ("tls:\n  mutual: true\n  secretName: bonsai-tls\n", "tls.mutual needs tls.enabled"),
], ids=["no-secret", "mutual-without-tls"])
def test_tls_values_that_cannot_work_are_refused_at_render(renderer, tmp_path, values, message):
    path = tmp_path / "bad.yaml"
    path.write_text(values)
    with pytest.raises(RuntimeError, match=message):
        render(renderer, [str(path)])


# ---------------------------------------------------------------- against the server

@pytest.fixture(scope="module")
def server_flags():
    binary = server_binary()
    assert os.access(binary, os.X_OK), f"no bonsai-server at {binary}"
    result = subprocess.run([binary, "--helpfull"], capture_output=True, text=True, timeout=30)
    return set(re.findall(r"^\s+--(\w+) \(", result.stdout + result.stderr, re.M))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_flag_in_the_chart_is_a_server_flag(rendered, server_flags, scenario):
    assert "listen" in server_flags, "could not read the flags of bonsai-server --helpfull"
    unknown = set(flag_values(deployment_container(rendered[scenario]))) - server_flags
    assert not unknown, f"flags the server does not have: {unknown}"


def _health_check(target: str, service: str) -> int:
    request = (b"\x0a" + bytes([len(service)]) + service.encode()) if service else b""
    with grpc.insecure_channel(target) as channel:
        response = channel.unary_unary("/grpc.health.v1.Health/Check")(request, timeout=5)
    return response[1] if len(response) >= 2 and response[0] == 0x08 else 0


def test_server_started_with_the_charts_arguments_answers_its_probes(rendered):
    """The default Deployment's args, listening on loopback instead of
    0.0.0.0: the gRPC probe's health check says SERVING on the probe's port,
    and the ServiceMonitor's path serves metrics on the metrics port."""
    out = rendered["all-features-values.yaml"]
    c = deployment_container(rendered["default"])
    grpc_port, metrics_port = free_port(), free_port()
    args = [a for a in c["args"] if not a.startswith(("--listen=", "--metrics_listen="))]
    server = BonsaiServer(flags=args)
    server.port, server.metrics_port = grpc_port, metrics_port
    server.target = f"127.0.0.1:{grpc_port}"
    server.args = [server.binary, f"--listen={server.target}", f"--metrics_listen=127.0.0.1:{metrics_port}", *args]
    server.start()
    try:
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert _health_check(server.target, c[kind]["grpc"]["service"]) == 1, kind
        path = one(out, "ServiceMonitor")["spec"]["endpoints"][0]["path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}", timeout=10) as r:
            body = r.read().decode()
        assert "bonsai_build_info" in body and "grpc_server_handled_total" in body
    finally:
        server.close()


def test_server_started_with_the_charts_tls_arguments_passes_its_probes_and_serves_mutual_tls(
        rendered, tmp_path):
    """The TLS scenario's args, with the Secret's files (as cert-manager
    names them) in a folder standing in for the mount: the TCP probe's port
    accepts connections, a client with a certificate of ca.crt is served, one
    without is refused."""
    pki = make_pki(str(tmp_path / "pki"))
    secret = tmp_path / "secret"
    secret.mkdir()
    for name, path in (("tls.crt", pki.server_cert), ("tls.key", pki.server_key), ("ca.crt", pki.ca)):
        (secret / name).write_bytes(pki.read(path))
    c = deployment_container(rendered["tls-values.yaml"])
    args = [a.replace(TLS_DIR, str(secret)) for a in c["args"]
            if not a.startswith(("--listen=", "--metrics_listen=", "--spool_dir=", "--max_spool_bytes="))]
    grpc_port = free_port()
    good = grpc.ssl_channel_credentials(pki.read(pki.ca), pki.read(pki.client_key), pki.read(pki.client_cert))
    server = BonsaiServer(flags=args, channel_credentials=good)
    server.port, server.target = grpc_port, f"127.0.0.1:{grpc_port}"
    server.args = [server.binary, f"--listen={server.target}", f"--metrics_listen=127.0.0.1:{server.metrics_port}",
                   *args]
    server.start()
    try:
        assert "tls=mutual" in server.log()
        # What the kubelet's tcpSocket probe does, on the port standing in for the container's.
        container_port = {p["name"]: p["containerPort"] for p in c["ports"]}["grpc"]
        assert all(c[kind]["tcpSocket"]["port"] == container_port for kind in PROBES)
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
            pass
        with grpc.secure_channel(server.target, good) as channel:
            assert channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10) == b"\x08\x01"
        anonymous = grpc.ssl_channel_credentials(pki.read(pki.ca))
        with grpc.secure_channel(server.target, anonymous) as channel:
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.alive()
    finally:
        server.close()
