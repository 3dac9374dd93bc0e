#!/usr/bin/env python3
"""Asks a gRPC server's standard health service (grpc.health.v1.Health/Check)
whether it is SERVING; exits 0 if so, 1 otherwise. For the image's
HEALTHCHECK, where nothing else is installed to ask it.

    bonsai-healthcheck [HOST:PORT] [SERVICE]     (default 127.0.0.1:50051, "")

Debian's python3-grpcio has no grpc_health package, and the two messages are
one string field and one enum, so they are encoded here by hand.

For a server started with TLS, set the client's variables in the container:
BONSAI_TLS_CA (the CA of the server's certificate), BONSAI_TLS_CERT and
BONSAI_TLS_KEY (a client certificate, for mutual TLS), BONSAI_TLS_SERVER_NAME
(a name in the server's certificate, which rarely names 127.0.0.1).
"""
import os
import sys

import grpc

SERVING = 1


def encode_request(service: str) -> bytes:
    data = service.encode()
    return b"\x0a" + bytes([len(data)]) + data if data else b""  # field 1, length-delimited


def decode_status(response: bytes) -> int:
    # HealthCheckResponse{status = 1 (enum)}: tag 0x08 then a one-byte varint;
    # an empty message is the default, UNKNOWN (0).
    if len(response) >= 2 and response[0] == 0x08:
        return response[1]
    return 0


def open_channel(target: str) -> grpc.Channel:
    paths = [os.environ.get(f"BONSAI_TLS_{name}") or None for name in ("CA", "CERT", "KEY")]
    if not any(paths):
        return grpc.insecure_channel(target)
    ca, cert, key = (open(p, "rb").read() if p else None for p in paths)
    options = []
    if os.environ.get("BONSAI_TLS_SERVER_NAME"):
        options.append(("grpc.ssl_target_name_override", os.environ["BONSAI_TLS_SERVER_NAME"]))
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, key, cert), options=options)


def main(argv) -> int:
    target = argv[1] if len(argv) > 1 else "127.0.0.1:50051"
    service = argv[2] if len(argv) > 2 else ""
    try:
        with open_channel(target) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            status = decode_status(check(encode_request(service), timeout=2.0))
    except grpc.RpcError as err:
        print(f"unhealthy: {err.code().name} {err.details()}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"unhealthy: cannot read a BONSAI_TLS_* file: {err}", file=sys.stderr)
        return 1
    if status != SERVING:
        print(f"unhealthy: status {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
