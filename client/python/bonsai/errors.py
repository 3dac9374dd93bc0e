"""Exceptions raised by the bonsai client.

Every failure of a call is a BonsaiError carrying the gRPC status code and the
server's message, so callers can branch on `err.code` without importing grpc
types for the common cases (`err.code_name == "INVALID_ARGUMENT"`). When the
server says why in a word (trailing metadata `bonsai-error-reason`), the
error is one of the subclasses below, and `err.reason` holds the word:

    BonsaiError
    ├── InvalidArgument          INVALID_ARGUMENT
    │   ├── InvalidSpec          the spec, rules or recipe   (INVALID_SPEC)
    │   └── InvalidModel         the model or calibration    (INVALID_MODEL)
    ├── ModelTooLarge            over a limit of the server  (MODEL_TOO_LARGE)
    ├── ServerBusy               retry later: `retry_after`  (QUEUE_FULL, PEER_LIMIT, SPOOL_FULL)
    ├── ServerUnavailable        draining or unreachable     (SHUTTING_DOWN, UNAVAILABLE)
    └── IntegrityError           the output failed its SHA-256 or size check

The grpc.RpcError the failure came from is kept as `__cause__`.
"""
from __future__ import annotations

from typing import Optional

import grpc

REASON_KEY = "bonsai-error-reason"
RETRY_AFTER_KEY = "bonsai-retry-after-ms"


class BonsaiError(Exception):
    """A call failed; `code` is a grpc.StatusCode, `message` the server's text
    (or gRPC's, for a connection that failed); `reason`, the server's word
    for why (e.g. "QUEUE_FULL"), or None; `hint`, when not None, what the
    client suspects and what to check (e.g. the TLS options)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, hint: Optional[str] = None,
                 reason: Optional[str] = None):
        super().__init__(f"{code.name}: {message}" + (f" (hint: {hint})" if hint else ""))
        self.code = code
        self.message = message
        self.hint = hint
        self.reason = reason

    @property
    def code_name(self) -> str:
        return self.code.name


class InvalidArgument(BonsaiError):
    """The request was refused as given; retrying it unchanged cannot help."""


class InvalidSpec(InvalidArgument):
    """The spec, its rules or the recipe: a method, option, pattern or sparsity."""


class InvalidModel(InvalidArgument):
    """The model's or the calibration file's bytes: not a format bonsai reads,
    truncated, hostile, or inconsistent (e.g. a shard missing)."""


class ModelTooLarge(BonsaiError):
    """The job is over one of this server's limits and never fits there (the
    message names the flag); a server with larger limits may take it."""


class ServerBusy(BonsaiError):
    """Every slot this client may use is taken now; `retry_after` is the
    server's suggested pause in seconds (a hint; the RetryPolicy backs off)."""

    def __init__(self, code: grpc.StatusCode, message: str, *, retry_after: Optional[float] = None,
                 **kwargs):
        super().__init__(code, message, **kwargs)
        self.retry_after = retry_after


class ServerUnavailable(BonsaiError):
    """The server is shutting down or cannot be reached: retry on another replica."""


class IntegrityError(BonsaiError):
    """The model received does not match the SHA-256 or size in the report."""

    def __init__(self, message: str):
        super().__init__(grpc.StatusCode.DATA_LOSS, message)


_BY_REASON = {
    "INVALID_SPEC": InvalidSpec,
    "INVALID_MODEL": InvalidModel,
    "MODEL_TOO_LARGE": ModelTooLarge,
    "QUEUE_FULL": ServerBusy,
    "PEER_LIMIT": ServerBusy,
    "SPOOL_FULL": ServerBusy,
    "SHUTTING_DOWN": ServerUnavailable,
}
_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
}


def _trailer(err, key: str) -> Optional[str]:
    try:
        for name, value in err.trailing_metadata() or ():
            if name == key:
                return value
    except Exception:  # not a Call, or the call never got trailers
        pass
    return None


def from_rpc_error(err: grpc.RpcError) -> BonsaiError:
    """Wraps a grpc.RpcError (which is also a grpc.Call) as the BonsaiError
    subclass its reason (or, without one, its code) names; the RpcError
    becomes the new error's __cause__."""
    code: Optional[grpc.StatusCode] = None
    details = ""
    try:
        code = err.code()
        details = err.details() or ""
    except Exception:  # not a Call: a bare RpcError
        pass
    code = code or grpc.StatusCode.UNKNOWN
    message = details or str(err)
    reason = _trailer(err, REASON_KEY)
    kind = _BY_REASON.get(reason) or _BY_CODE.get(code, BonsaiError)
    if kind is ServerBusy:
        retry_after_ms = _trailer(err, RETRY_AFTER_KEY)
        retry_after = int(retry_after_ms) / 1000 if retry_after_ms and retry_after_ms.isdigit() else None
        error: BonsaiError = ServerBusy(code, message, retry_after=retry_after, reason=reason)
    else:
        error = kind(code, message, reason=reason)
    error.__cause__ = err
    return error
