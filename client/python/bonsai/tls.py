"""TLS for the client: channel credentials from PEM files, and what to check
when a connection is refused.

gRPC reports every TLS failure as UNAVAILABLE with a transport message
("Ssl handshake failed: ... certificate verify failed", "Socket closed"),
which says little about the fix. `explain` adds a hint naming the option to
look at. Under TLS 1.3 a server that refuses the client's certificate does so
after the client has finished its side of the handshake, so the client only
sees the connection close: the server's log names the reason.
"""
from __future__ import annotations

import os
from typing import Optional

import grpc

from bonsai.errors import BonsaiError


def channel_credentials(ca=None, cert=None, key=None) -> grpc.ChannelCredentials:
    """TLS credentials from PEM file paths.

    `ca`: the CA(s) to trust for the server's certificate (None: the system's).
    `cert` and `key`: the client's certificate chain and private key, for a
    server that requires client certificates (mutual TLS); both or neither.
    """
    if (cert is None) != (key is None):
        missing = "tls_key" if key is None else "tls_cert"
        raise ValueError(f"tls_cert and tls_key go together: {missing} is missing")
    return grpc.ssl_channel_credentials(root_certificates=_read(ca, "tls_ca"),
                                        private_key=_read(key, "tls_key"),
                                        certificate_chain=_read(cert, "tls_cert"))


def _read(path, option: str) -> Optional[bytes]:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise OSError(f"{option}: cannot read {os.fspath(path)}: {err.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{option}: {os.fspath(path)} is not a PEM file (no -----BEGIN line)")
    return data


def handshake_refused(error: BonsaiError, tls: bool) -> bool:
    """Whether the client itself refused the server during the TLS handshake
    (untrusted certificate, wrong name, no TLS there): trying again cannot
    help, so such a failure is not retried."""
    return (tls and error.code == grpc.StatusCode.UNAVAILABLE and
            ("Ssl handshake failed" in error.message or "not in peer certificate" in error.message))


def explain(error: BonsaiError, tls: bool) -> BonsaiError:
    """`error` with a hint when it looks like a TLS mistake, else `error`."""
    if error.code != grpc.StatusCode.UNAVAILABLE or error.hint:
        return error
    hint = _hint(error.message, tls)
    if not hint:
        return error
    explained = type(error)(error.code, error.message, hint=hint, reason=error.reason)
    explained.__cause__ = error.__cause__
    return explained


def _hint(message: str, tls: bool) -> Optional[str]:
    if not tls:
        if "Socket closed" in message:
            return ("the server closed the connection at once; if it serves TLS, connect with "
                    "tls_ca= (CLI --tls-ca), and with tls_cert=/tls_key= (--tls-cert/--tls-key) "
                    "if it requires client certificates")
        return None
    if "certificate verify failed" in message:
        return ("the server's certificate is not signed by a CA this client trusts: pass the CA "
                "that signed it as tls_ca= (CLI --tls-ca), and check that it has not expired")
    if "not in peer certificate" in message:
        return ("the server's certificate does not name the host in the target: connect by a "
                "name or IP in its subjectAltName, or set tls_server_name= (CLI --tls-server-name)")
    if "wrong version number" in message or "packet length too long" in message:
        return ("nothing speaks TLS at this address: the server may be serving plaintext "
                "(started without --tls_cert_file); drop the TLS options or enable TLS there")
    if "Socket closed" in message or "Connection reset" in message:
        return ("the server closed the connection during the TLS handshake; if it requires client "
                "certificates (mutual TLS), pass tls_cert=/tls_key= (CLI --tls-cert/--tls-key) "
                "for a certificate signed by its client CA (--tls_client_ca_file) that has not "
                "expired; the server's log names the reason")
    return None
