"""API keys (bearer tokens from the config) and a token-bucket rate limit per key."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fastapi import Request

from network.bridge.config import ApiKey
from network.bridge.errors import BridgeError


@dataclass
class TokenBucket:
    rate_per_s: float
    capacity: float
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; 0.0 when granted, else the seconds until one is available."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate_per_s)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s


class KeyRing:
    def __init__(self, keys: list[ApiKey], clock=time.monotonic):
        self.keys = {k.key: k for k in keys}
        self.clock = clock
        self.buckets = {k.key: TokenBucket(k.rate_per_s, k.burst, k.burst, clock()) for k in keys}

    def check(self, authorization: str | None) -> ApiKey:
        """The key of an ``Authorization: Bearer`` header, charged one request. 401 / 429 otherwise."""
        scheme, _, token = (authorization or "").partition(" ")
        key = self.keys.get(token.strip()) if scheme.lower() == "bearer" else None
        if key is None:
            raise BridgeError(
                401,
                "Incorrect API key provided. Pass a key of this bridge as 'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
        wait = self.buckets[key.key].take(self.clock())
        if wait > 0:
            raise BridgeError(
                429,
                f"Rate limit reached for key {key.name!r}: {key.burst} requests at once, "
                f"{key.rate_per_s:g} per second after that. Retry in {wait:.1f}s.",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        return key


def require_key(request: Request) -> ApiKey:
    """FastAPI dependency: the caller's API key (rate-limited)."""
    return request.app.state.keys.check(request.headers.get("authorization"))
