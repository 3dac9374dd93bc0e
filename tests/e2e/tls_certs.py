"""Certificates for the TLS tests, made by the openssl command line.

Two CAs: the test CA signs the server's certificate (for 127.0.0.1 and
localhost, in subjectAltName, which is what gRPC checks), a good client
certificate and an expired one; another CA signs a client certificate the
server must not accept. The expired one comes from `openssl ca -startdate
-enddate`, since Debian 12's OpenSSL 3.0 has no `x509 -not_after` and
`-days` cannot go negative.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess

# One config for every step, so the system's openssl.cnf adds nothing.
_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
[ca]
default_ca = test_ca
[test_ca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
[any_name]
commonName = supplied
"""


@dataclasses.dataclass(frozen=True)
class Pki:
    folder: str
    ca: str                 # the CA that signed the server's and good clients' certificates
    server_cert: str        # for 127.0.0.1 and localhost
    server_key: str
    client_cert: str        # signed by `ca`
    client_key: str
    other_ca: str           # an unrelated CA
    other_client_cert: str  # signed by `other_ca`
    other_client_key: str
    expired_client_cert: str  # signed by `ca`, valid 2020-01-01 to 2020-01-02
    expired_client_key: str

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()


def _openssl(folder: str, *args: str) -> None:
    result = subprocess.run(["openssl", *args], cwd=folder, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _key(folder: str, name: str) -> str:
    _openssl(folder, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)
    return os.path.join(folder, name)


def _ca(folder: str, name: str, subject: str) -> tuple:
    key = _key(folder, f"{name}.key")
    _openssl(folder, "req", "-config", "openssl.cnf", "-x509", "-new", "-key", key, "-subj", subject,
             "-days", "3", "-extensions", "ca_ext", "-out", f"{name}.crt")
    return os.path.join(folder, f"{name}.crt"), key


def _signed(folder: str, name: str, subject: str, ca: tuple, extensions: str, serial: int) -> tuple:
    key = _key(folder, f"{name}.key")
    _openssl(folder, "req", "-config", "openssl.cnf", "-new", "-key", key, "-subj", subject,
             "-out", f"{name}.csr")
    _openssl(folder, "x509", "-req", "-in", f"{name}.csr", "-CA", ca[0], "-CAkey", ca[1],
             "-set_serial", str(serial), "-days", "3", "-extfile", "openssl.cnf",
             "-extensions", extensions, "-out", f"{name}.crt")
    return os.path.join(folder, f"{name}.crt"), key


def _expired(folder: str, name: str, subject: str, ca: tuple) -> tuple:
    key = _key(folder, f"{name}.key")
    _openssl(folder, "req", "-config", "openssl.cnf", "-new", "-key", key, "-subj", subject,
             "-out", f"{name}.csr")
    with open(os.path.join(folder, "index.txt"), "w"):
        pass
    with open(os.path.join(folder, "serial"), "w") as f:
        f.write("1000\n")
    _openssl(folder, "ca", "-config", "openssl.cnf", "-batch", "-notext", "-cert", ca[0], "-keyfile", ca[1],
             "-in", f"{name}.csr", "-extensions", "client_ext",
             "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-out", f"{name}.crt")
    return os.path.join(folder, f"{name}.crt"), key


def make_pki(folder: str) -> Pki:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "openssl.cnf"), "w") as f:
        f.write(_CONFIG)
    ca = _ca(folder, "ca", "/CN=bonsai test CA")
    other_ca = _ca(folder, "other-ca", "/CN=some other CA")
    server = _signed(folder, "server", "/CN=bonsai-server", ca, "server_ext", 1)
    client = _signed(folder, "client", "/CN=good client", ca, "client_ext", 2)
    other_client = _signed(folder, "other-client", "/CN=client of another CA", other_ca, "client_ext", 3)
    expired = _expired(folder, "expired-client", "/CN=expired client", ca)
    return Pki(folder=folder, ca=ca[0], server_cert=server[0], server_key=server[1],
               client_cert=client[0], client_key=client[1], other_ca=other_ca[0],
               other_client_cert=other_client[0], other_client_key=other_client[1],
               expired_client_cert=expired[0], expired_client_key=expired[1])
