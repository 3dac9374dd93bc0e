"""Exceptions raised by the bonsai client.

Every failure of a call is a BonsaiError carrying the gRPC status code and the
server's message, so callers can branch on `err.code` without importing grpc
types for the common cases (`err.code_name == "INVALID_ARGUMENT"`).
"""
from __future__ import annotations

from typing import Optional

import grpc


class BonsaiError(Exception):
    """A call failed; `code` is a grpc.StatusCode, `message` the server's text
    (or gRPC's, for a connection that failed); `hint`, when not None, what the
    client suspects and what to check (e.g. the TLS options)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, hint: Optional[str] = None):
        super().__init__(f"{code.name}: {message}" + (f" (hint: {hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint

    @property
    def code_name(self) -> str:
        return self.code.name


class IntegrityError(BonsaiError):
    """The model received does not match the SHA-256 or size in the report."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


def from_rpc_error(err: grpc.RpcError) -> BonsaiError:
    """Wraps a grpc.RpcError (which is also a grpc.Call) as a BonsaiError."""
    code: Optional[grpc.StatusCode] = None
    details = ""
    try:
        code = err.code()
        details = err.details() or ""
    except Exception:  # not a Call: a bare RpcError
        pass
    return BonsaiError(code or grpc.StatusCode.UNKNOWN, details or str(err))
