"""The metrics, the dashboard and the alerts, proven against a real Prometheus.

A bonsai-server is scraped every second by Debian's Prometheus while real
clients drive jobs through it: successes in both formats, an invalid upload,
a model over --max_model_bytes, and a cancelled upload. Then every expression
of every dashboard panel and every alert rule is evaluated through
Prometheus's query API: each must parse and return at least one series.

Alert expressions end in a threshold ("ratio > 0.05"), and a healthy server
is below it, so the comparison is evaluated with `bool` (1 or 0 per series
instead of filtering). The memory alert joins cAdvisor's
container_spec_memory_limit_bytes, which only a kubelet exports: a second
scrape target on loopback stands in for it with one series carrying the
pod's labels, so the join itself is proven.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time

import grpc
import pytest
import yaml

import bonsai
from bonsai.v1 import compressor_pb2 as pb
from bonsai.v1 import compressor_pb2_grpc as pb_grpc
from prometheus_process import Prometheus, prometheus_binary, promtool
from server_process import BonsaiServer, free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARD = os.path.join(REPO, "deploy", "grafana", "bonsai-dashboard.json")
ALERTS = os.path.join(REPO, "deploy", "prometheus", "bonsai-alerts.yaml")
ALERT_TESTS = os.path.join(REPO, "deploy", "prometheus", "bonsai-alerts.test.yaml")

NAMESPACE = "bonsai-e2e"
POD = "bonsai-e2e-0"
# Grafana's variables, as a user with this namespace and pod selected sees them.
TEMPLATE_VALUES = {"$__rate_interval": "1m", "$namespace": NAMESPACE, "$pod": POD,
                   "${namespace}": NAMESPACE, "${pod}": POD}



@pytest.fixture(scope="module", autouse=True)
def _prometheus_installed():
    assert prometheus_binary(), "Debian's prometheus is missing: run deploy/install-deps.sh"


def dashboard_exprs() -> list:
    """(panel title, expr with the template variables filled in), every target."""
    with open(DASHBOARD) as f:
        dashboard = json.load(f)
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in TEMPLATE_VALUES.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            out.append((panel["title"], expr))
    return out


def alert_rules() -> list:
    with open(ALERTS) as f:
        return [rule for group in yaml.safe_load(f)["groups"] for rule in group["rules"]]


_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)(\s*)(?=-?[0-9.])")


def with_bool(expr: str) -> str:
    """`x > 0.05` -> `x > bool 0.05`: every series kept, valued 1 or 0.
    Label matchers are untouched: their values are quoted."""
    return _COMPARISON.sub(r"\1 bool\2", expr)


class _CadvisorStandIn(http.server.BaseHTTPRequestHandler):
    body = (f'container_spec_memory_limit_bytes{{namespace="{NAMESPACE}",pod="{POD}",'
            f'container="bonsai"}} 2147483648\n').encode()

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def cadvisor():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _CadvisorStandIn)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _limit_between(small: bytes, large: bytes) -> int:
    assert len(small) < len(large)
    return (len(small) + len(large)) // 2


@pytest.fixture(scope="module")
def scraped(cadvisor, mlp_safetensors, mlp_onnx, cnn_safetensors):
    """A server that has served every kind of job, and a Prometheus that has
    scraped it since before the first one. Shared by the module's tests."""
    limit = _limit_between(mlp_safetensors, cnn_safetensors)
    assert len(mlp_onnx) < limit, "the ONNX test model must fit under the limit too"
    server = BonsaiServer(flags=[f"--max_model_bytes={limit}"], workers=2).start()
    prom = None
    try:
        prom = Prometheus(
            scrape_configs=[
                {"job_name": "bonsai",
                 "static_configs": [{"targets": [f"127.0.0.1:{server.metrics_port}"],
                                     "labels": {"namespace": NAMESPACE, "pod": POD, "container": "bonsai"}}]},
                {"job_name": "cadvisor-stand-in", "honor_labels": True,
                 "static_configs": [{"targets": [cadvisor]}]},
            ],
            rule_files=[ALERTS]).start()
        prom.wait_until('up{job="bonsai"}', lambda v: v == 1, what="the first scrape of bonsai-server")
        prom.wait_until('up{job="cadvisor-stand-in"}', lambda v: v == 1, what="the cAdvisor stand-in")
        made = drive_jobs(server.target, mlp_safetensors, mlp_onnx, cnn_safetensors)
        # Every RPC started has ended (the client adds calls of its own, such
        # as GetCapabilities before an upload), then three more scrapes so
        # that rate() has samples on both sides of every change.
        svc = 'grpc_service="bonsai.v1.Compressor"'
        prom.wait_until(f'sum(grpc_server_started_total{{{svc}}})', lambda v: v >= made,
                        what=f"{made} started Compressor RPCs")
        prom.wait_until(f'sum(grpc_server_started_total{{{svc}}}) - sum(grpc_server_handled_total{{{svc}}})',
                        lambda v: v == 0, what="every started RPC handled")
        prom.wait_until('min(count_over_time(bonsai_jobs_total[5m]))', lambda v: v >= 3,
                        what="three scrapes of every bonsai_jobs_total series")
        yield prom
    finally:
        if prom is not None:
            prom.close()
        status = server.stop()
        log = server.log()
        server.close()
        assert status in (0, -15), f"bonsai-server ended with {status}:\n{log}"


def drive_jobs(target: str, mlp_safetensors: bytes, mlp_onnx: bytes, too_large: bytes) -> int:
    """Returns the number of Compressor RPCs made (at least)."""
    rpcs = 0
    with bonsai.Client(target, timeout=120, retry=bonsai.NO_RETRY) as client:
        client.capabilities()
        client.inspect(mlp_onnx)
        client.compress(mlp_safetensors, method="magnitude", sparsity=0.5)
        client.compress(mlp_onnx, method="magnitude", sparsity=0.5)
        rpcs += 4
        with pytest.raises(bonsai.BonsaiError):
            client.compress(b"\x08\x00\x00\x00\x00\x00\x00\x00{not a model", method="magnitude", sparsity=0.5)
        rpcs += 1

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.CompressorStub(channel)
        # Over --max_model_bytes: refused from the size in the spec.
        spec = pb.CompressionSpec(method="magnitude", sparsity=0.5,
                                  files=[pb.FileDeclaration(name="m.safetensors", size_bytes=len(too_large))])
        requests = [pb.CompressRequest(spec=spec),
                    pb.CompressRequest(file_chunk=pb.FileChunk(file=0, data=too_large))]
        with pytest.raises(grpc.RpcError):
            for _ in stub.Compress(iter(requests), timeout=60):
                pass
        rpcs += 1

        # Cancelled mid-upload: the spec and half the model, then the client goes.
        release = threading.Event()

        def half_upload():
            yield pb.CompressRequest(spec=pb.CompressionSpec(
                method="magnitude", sparsity=0.5,
                files=[pb.FileDeclaration(name="m.safetensors", size_bytes=len(mlp_safetensors))]))
            yield pb.CompressRequest(file_chunk=pb.FileChunk(
                file=0, data=mlp_safetensors[: len(mlp_safetensors) // 2]))
            release.wait(60)

        call = stub.Compress(half_upload(), timeout=60)

        def first_word():
            try:
                next(call, None)  # the server answers the spec once it admits the job
            except grpc.RpcError:
                pass
        reader = threading.Thread(target=first_word, daemon=True)
        reader.start()
        reader.join(timeout=30)
        call.cancel()
        reader.join(timeout=30)
        release.set()
        rpcs += 1
    return rpcs


def test_prometheus_config_and_rules_pass_promtool(tmp_path):
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "15s"},
        "rule_files": [ALERTS],
        "scrape_configs": [{"job_name": "bonsai", "static_configs": [{"targets": ["127.0.0.1:9464"]}]}],
    }))
    for args in (["check", "config", str(config)], ["check", "rules", ALERTS],
                 ["test", "rules", ALERT_TESTS]):
        result = promtool(*args)
        assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


def test_every_alert_has_a_promtool_unit_test():
    with open(ALERT_TESTS) as f:
        tests = yaml.safe_load(f)["tests"]
    tested = {t["alertname"] for test in tests for t in test.get("alert_rule_test", [])}
    assert {r["alert"] for r in alert_rules()} <= tested


def test_server_exposes_every_documented_metric(scraped):
    names = set(scraped.api("label/__name__/values")["data"])
    for name in [
        "grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
        "grpc_server_msg_received_total", "grpc_server_msg_sent_total",
        "bonsai_jobs_total", "bonsai_job_stage_seconds_bucket", "bonsai_jobs_running", "bonsai_jobs_queued",
        "bonsai_jobs_admitted", "bonsai_job_slots", "bonsai_workers", "bonsai_received_bytes_total", "bonsai_sent_bytes_total", "bonsai_model_bytes_bucket",
        "bonsai_compression_ratio_bucket", "bonsai_rejected_total", "bonsai_build_info",
        "process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
        "process_start_time_seconds",
    ]:
        assert name in names, f"{name} was never scraped"


def test_jobs_are_counted_by_outcome(scraped):
    outcomes = {r["metric"]["outcome"] for r in
                scraped.query('sum by (outcome) (bonsai_jobs_total) > 0')["data"]["result"]}
    assert {"ok", "invalid"} <= outcomes, outcomes
    methods = {r["metric"]["method"] for r in
               scraped.query('sum by (method) (bonsai_jobs_total) > 0')["data"]["result"]}
    assert {"magnitude", "inspect"} <= methods, methods  # Inspect calls are jobs too
    assert scraped.scalar('sum(bonsai_rejected_total{reason="too_large"})') >= 1
    codes = {r["metric"]["grpc_code"] for r in scraped.query(
        'sum by (grpc_code) (grpc_server_handled_total{grpc_service="bonsai.v1.Compressor"})')["data"]["result"]}
    assert "OK" in codes and "Canceled" in codes and len(codes) >= 3, codes


def test_labels_stay_bounded(scraped):
    """No label value can come from a client: methods, formats and outcomes
    are from fixed sets, gRPC methods are the API's own."""
    allowed = {
        "method": {"magnitude", "nm", "structured", "wanda", "sparsegpt", "binarize", "ternarize",
                   "rtn", "gptq", "recipe", "inspect", "other"},
        "format": {"onnx", "safetensors", "unknown"},
        "outcome": {"ok", "invalid", "rejected", "cancelled", "failed"},
        "grpc_method": {"Compress", "Inspect", "GetCapabilities", "Check", "Watch",
                        "ServerReflectionInfo", "unknown"},
    }
    for label, values in allowed.items():
        seen = set(scraped.api(f"label/{label}/values", **{"match[]": '{job="bonsai"}'})["data"])
        assert seen <= values, f"{label}: unexpected {seen - values}"


def test_dashboard_template_variables_find_the_pod(scraped):
    namespaces = scraped.api("label/namespace/values", **{"match[]": "bonsai_build_info"})["data"]
    pods = scraped.api("label/pod/values", **{"match[]": f'bonsai_build_info{{namespace=~"{NAMESPACE}"}}'})["data"]
    assert NAMESPACE in namespaces and POD in pods


def test_every_dashboard_expression_returns_series(scraped):
    failures = []
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for title, expr in exprs:
        answer = scraped.query(expr)
        if answer.get("status") != "success":
            failures.append(f"{title}: {answer.get('error')}\n    {expr}")
        elif not answer["data"]["result"]:
            failures.append(f"{title}: no series\n    {expr}")
    assert not failures, "\n".join(failures)


def test_every_alert_expression_is_valid_and_returns_series(scraped):
    failures = []
    for rule in alert_rules():
        full = scraped.query(rule["expr"])
        if full.get("status") != "success":
            failures.append(f"{rule['alert']}: {full.get('error')}")
            continue
        signal = scraped.query(with_bool(rule["expr"]))
        if signal.get("status") != "success" or not signal["data"]["result"]:
            failures.append(f"{rule['alert']}: no series for {with_bool(rule['expr'])}")
    assert not failures, "\n".join(failures)


def test_prometheus_loads_and_evaluates_every_rule(scraped):
    names = {r["alert"] for r in alert_rules()}
    deadline = time.monotonic() + 30
    while True:  # until every rule has been evaluated once (every second)
        groups = scraped.api("rules")["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        if all(loaded.get(n, {}).get("health", "unknown") != "unknown" for n in names):
            break
        assert time.monotonic() < deadline, f"rules not evaluated within 30 s: {loaded}"
        time.sleep(0.5)
    assert names <= set(loaded), names - set(loaded)
    unhealthy = {n: loaded[n].get("lastError") for n in names if loaded[n].get("health") != "ok"}
    assert not unhealthy, unhealthy
