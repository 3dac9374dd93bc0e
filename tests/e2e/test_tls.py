"""TLS and mutual TLS on the gRPC port, with a real server and the real client.

Certificates come from openssl (tls_certs.py): a CA that signs the server's
certificate (127.0.0.1 and localhost) and the good client's, an unrelated CA
with a client of its own, and an expired client certificate. Every refusal
is UNAVAILABLE with a hint on what to check, and the server goes on serving:
a good client succeeds right after.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import urllib.request

import grpc
import numpy as np
import pytest

import bonsai
from bonsai import safetensors_io
from server_process import BonsaiServer, server_binary
from tls_certs import make_pki

CLIENT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "client", "python"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(str(tmp_path_factory.mktemp("pki")))


def _credentials(pki, ca=None, cert=None, key=None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(pki.read(ca or pki.ca), pki.read(key) if key else None,
                                        pki.read(cert) if cert else None)


@contextlib.contextmanager
def _running(flags, credentials):
    srv = BonsaiServer(flags, channel_credentials=credentials).start()
    try:
        yield srv
    finally:
        died = not srv.alive()
        status = srv.stop()
        log = srv.log()
        srv.close()
        if died or (status is not None and status != 0 and status != -signal.SIGTERM):
            pytest.fail(f"the TLS server ended with status {status}:\n{log}")


@pytest.fixture(scope="module")
def tls_server(pki):
    with _running([f"--tls_cert_file={pki.server_cert}", f"--tls_key_file={pki.server_key}"],
                  _credentials(pki)) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls_server(pki):
    with _running([f"--tls_cert_file={pki.server_cert}", f"--tls_key_file={pki.server_key}",
                   f"--tls_client_ca_file={pki.ca}"],
                  _credentials(pki, cert=pki.client_cert, key=pki.client_key)) as srv:
        yield srv


def _compress_sparsity(client: bonsai.Client, model: bytes) -> float:
    result = client.compress(model, method="magnitude", sparsity=0.5)
    return result.report.totals.sparsity


def _good_client_still_served(srv, pki, model: bytes) -> None:
    with bonsai.Client(srv.target, timeout=60, tls_ca=pki.ca, tls_cert=pki.client_cert,
                       tls_key=pki.client_key) as client:
        assert _compress_sparsity(client, model) > 0.45
    assert srv.alive()


# ---------------------------------------------------------------- TLS

def test_ready_line_says_whether_tls_is_on_or_mutual(server, tls_server, mtls_server):
    # The ready line is the log's first: read it whole (each job adds a line).
    assert "tls=off" in server.log(tail=1 << 24)
    assert "tls=on," in tls_server.log(tail=1 << 24)
    assert "tls=mutual," in mtls_server.log(tail=1 << 24)


def test_compress_over_tls_gives_the_same_model_as_plaintext(tls_server, client, pki, mlp_safetensors):
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.ca) as tls_client:
        over_tls = tls_client.compress(mlp_safetensors, method="magnitude", sparsity=0.5, scope="global")
        assert tls_client.capabilities().methods
        assert tls_client.inspect(mlp_safetensors).tensors
    plain = client.compress(mlp_safetensors, method="magnitude", sparsity=0.5, scope="global")
    assert over_tls.model == plain.model
    assert over_tls.report.totals.sparsity > 0.45


def test_tls_client_may_name_the_host_to_expect_in_the_certificate(tls_server, pki, mlp_safetensors):
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.ca, tls_server_name="localhost") as c:
        assert _compress_sparsity(c, mlp_safetensors) > 0.45
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.ca, tls_server_name="bonsai.example.com",
                       retry=bonsai.NO_RETRY) as c:
        with pytest.raises(bonsai.BonsaiError) as info:
            c.capabilities()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "tls_server_name" in info.value.hint


@dataclasses.dataclass(frozen=True)
class _CountingRetry(bonsai.RetryPolicy):
    calls: list = dataclasses.field(default_factory=list)

    def should_retry(self, code, attempt, upload_started):
        self.calls.append(code)
        return super().should_retry(code, attempt, upload_started)


def test_client_trusting_another_ca_is_refused_at_once_with_a_hint(tls_server, pki, mlp_safetensors):
    retry = _CountingRetry(initial_backoff=0.01, max_backoff=0.02)
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.other_ca, retry=retry) as client:
        with pytest.raises(bonsai.BonsaiError) as info:
            client.compress(mlp_safetensors, method="magnitude", sparsity=0.5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "certificate verify failed" in info.value.message
    assert "tls_ca" in info.value.hint and "--tls-ca" in info.value.hint
    assert retry.calls == [], "a certificate the client refuses is refused again: no retry"
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.ca) as good:
        assert _compress_sparsity(good, mlp_safetensors) > 0.45
    assert tls_server.alive()


def test_plaintext_client_of_a_tls_server_is_refused_with_a_hint(tls_server, pki, mlp_safetensors):
    with bonsai.Client(tls_server.target, timeout=60, retry=bonsai.NO_RETRY) as client:
        with pytest.raises(bonsai.BonsaiError) as info:
            client.capabilities()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "--tls-ca" in info.value.hint
    with bonsai.Client(tls_server.target, timeout=60, tls_ca=pki.ca) as good:
        assert _compress_sparsity(good, mlp_safetensors) > 0.45


def test_tls_client_of_a_plaintext_server_is_told_nothing_speaks_tls(server, pki):
    with bonsai.Client(server.target, timeout=60, tls_ca=pki.ca) as client:
        with pytest.raises(bonsai.BonsaiError) as info:
            client.capabilities()
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "nothing speaks TLS" in info.value.hint


def test_metrics_endpoint_stays_plaintext_on_its_own_port(mtls_server):
    with urllib.request.urlopen(f"http://127.0.0.1:{mtls_server.metrics_port}/metrics", timeout=10) as r:
        assert "bonsai_build_info" in r.read().decode()


# ---------------------------------------------------------------- mutual TLS

@dataclasses.dataclass
class Refusal:
    name: str
    cert: str | None
    key: str | None
    server_says: str  # in the server's log (gRPC's handshake error)


def _refusals(pki):
    return [Refusal("no client certificate", None, None, "peer did not return a certificate"),
            Refusal("client certificate of another CA", pki.other_client_cert, pki.other_client_key,
                    "certificate verify failed"),
            Refusal("expired client certificate", pki.expired_client_cert, pki.expired_client_key,
                    "certificate verify failed")]


@pytest.mark.parametrize("case", [0, 1, 2], ids=["no-cert", "other-ca", "expired"])
def test_mutual_tls_refuses_a_client_without_a_valid_certificate_and_goes_on(
        mtls_server, pki, mlp_safetensors, case):
    refusal = _refusals(pki)[case]
    before = len(mtls_server.log(tail=1 << 20))
    with bonsai.Client(mtls_server.target, timeout=60, tls_ca=pki.ca, tls_cert=refusal.cert,
                       tls_key=refusal.key, retry=bonsai.NO_RETRY) as client:
        with pytest.raises(bonsai.BonsaiError) as info:
            client.compress(mlp_safetensors, method="magnitude", sparsity=0.5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE, refusal.name
    assert "--tls-cert" in info.value.hint and "expired" in info.value.hint, refusal.name
    assert refusal.server_says in mtls_server.log(tail=1 << 20)[before:], refusal.name
    _good_client_still_served(mtls_server, pki, mlp_safetensors)


def test_mutual_tls_serves_a_client_with_a_certificate_of_its_ca(mtls_server, pki, mlp_safetensors, tmp_path):
    out = tmp_path / "pruned.safetensors"
    with bonsai.Client(mtls_server.target, timeout=60, tls_ca=pki.ca, tls_cert=pki.client_cert,
                       tls_key=pki.client_key) as client:
        result = client.compress(mlp_safetensors, method="magnitude", sparsity=0.5, output_path=str(out))
        assert {t.name for t in client.inspect(str(out)).tensors} >= {"fc1.weight"}
    assert result.report.totals.sparsity > 0.45
    assert np.mean(safetensors_io.load(out)["fc1.weight"] == 0) > 0.45


# ---------------------------------------------------------------- the CLI

def run_cli(*args, env=None, timeout=300):
    env = dict(os.environ, PYTHONPATH=CLIENT, **(env or {}))
    return subprocess.run(["/usr/bin/python3", "-m", "bonsai", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_cli_compresses_through_mutual_tls_with_its_tls_options(mtls_server, pki, mlp_safetensors, tmp_path):
    src, out = tmp_path / "mlp.safetensors", tmp_path / "out.safetensors"
    src.write_bytes(mlp_safetensors)
    proc = run_cli("--target", mtls_server.target, "--tls-ca", pki.ca, "--tls-cert", pki.client_cert,
                   "--tls-key", pki.client_key, "compress", str(src), "-o", str(out), "--sparsity", "0.5",
                   "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert np.mean(safetensors_io.load(out)["fc1.weight"] == 0) > 0.45


def test_cli_reads_the_tls_options_from_the_environment(mtls_server, pki):
    proc = run_cli("capabilities", "--json", env={
        "BONSAI_TARGET": mtls_server.target, "BONSAI_TLS_CA": pki.ca,
        "BONSAI_TLS_CERT": pki.client_cert, "BONSAI_TLS_KEY": pki.client_key})
    assert proc.returncode == 0, proc.stderr
    assert '"magnitude"' in proc.stdout


def test_cli_without_a_client_certificate_prints_the_hint_and_exits_1(mtls_server, pki):
    proc = run_cli("--target", mtls_server.target, "--tls-ca", pki.ca, "--timeout", "20", "capabilities")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: UNAVAILABLE: ")
    assert lines[-1].startswith("hint: ") and "--tls-cert" in lines[-1]


def test_client_tls_options_are_checked_before_connecting(pki, tmp_path):
    with pytest.raises(ValueError, match="tls_key is missing"):
        bonsai.Client("127.0.0.1:1", tls_ca=pki.ca, tls_cert=pki.client_cert)
    with pytest.raises(OSError, match="tls_ca: cannot read"):
        bonsai.Client("127.0.0.1:1", tls_ca=str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="not both"):
        bonsai.Client("127.0.0.1:1", tls_ca=pki.ca, credentials=grpc.ssl_channel_credentials())
    with pytest.raises(ValueError, match="needs TLS"):
        bonsai.Client("127.0.0.1:1", tls_server_name="localhost")


# ---------------------------------------------------------------- start-up errors

@pytest.mark.parametrize("flags, message", [
    (lambda p: [f"--tls_cert_file={p.server_cert}"], "--tls_cert_file is set but --tls_key_file is not"),
    (lambda p: [f"--tls_cert_file={p.server_cert}", f"--tls_key_file={p.folder}/missing.key"],
     "--tls_key_file: cannot read "),
    (lambda p: [f"--tls_cert_file={p.server_cert}", f"--tls_key_file={p.client_key}"],
     "is not the private key of the certificate in --tls_cert_file"),
    (lambda p: [f"--tls_client_ca_file={p.ca}"], "--tls_client_ca_file needs --tls_cert_file"),
], ids=["cert-without-key", "unreadable-key", "key-of-another-cert", "client-ca-alone"])
def test_tls_mistakes_stop_the_server_at_start_naming_the_flag(pki, flags, message):
    result = subprocess.run([server_binary(), "--listen=127.0.0.1:0", "--metrics_listen=", *flags(pki)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr
    assert "ready on" not in result.stdout


# ---------------------------------------------------------------- the image's health check

def test_image_healthcheck_asks_a_mutual_tls_server_with_the_clients_variables(mtls_server, pki):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "docker", "healthcheck.py")

    def check(**env):
        return subprocess.run(["/usr/bin/python3", script, mtls_server.target], capture_output=True, text=True,
                              env=dict(os.environ, **env), timeout=60)
    assert check(BONSAI_TLS_CA=pki.ca, BONSAI_TLS_CERT=pki.client_cert, BONSAI_TLS_KEY=pki.client_key,
                 BONSAI_TLS_SERVER_NAME="localhost").returncode == 0
    refused = check(BONSAI_TLS_CA=pki.ca)
    assert refused.returncode == 1 and "unhealthy: UNAVAILABLE" in refused.stderr
