"""Minting HS256 tokens for operators: the purge CronJob and grpcurl debugging."""

import time
import uuid
from typing import Any

import jwt


def mint(
    secret: str,
    *,
    role: str,
    sub: str | None = None,
    ttl_seconds: int = 3600,
    audience: str | None = None,
) -> str:
    """A signed token for `role` (and `sub`), valid for `ttl_seconds`."""
    now = int(time.time())
    claims: dict[str, Any] = {"role": role, "iat": now, "exp": now + ttl_seconds}
    if sub is not None:
        claims["sub"] = sub
    if audience is not None:
        claims["aud"] = audience
    claims["jti"] = uuid.uuid4().hex
    return jwt.encode(claims, secret, algorithm="HS256")
