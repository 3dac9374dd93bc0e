"""When and how long to wait before trying a call again."""
from __future__ import annotations

import dataclasses
import random

import grpc

RETRYABLE_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter.

    Only calls that failed before any upload byte was handed to gRPC are
    retried: the server then has seen at most the spec, so trying again cannot
    duplicate work, and a non-seekable upload is never needed twice.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    multiplier: float = 2.0
    codes: tuple = RETRYABLE_CODES

    def backoff(self, attempt: int, rng: random.Random = random) -> float:
        """Seconds to sleep after failed attempt number `attempt` (1-based)."""
        ceiling = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return rng.uniform(0, ceiling)

    def should_retry(self, code: grpc.StatusCode, attempt: int, upload_started: bool) -> bool:
        return code in self.codes and attempt < self.max_attempts and not upload_started


NO_RETRY = RetryPolicy(max_attempts=1)
