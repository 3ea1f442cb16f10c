"""The signing keys a JWKS document publishes (JWT_JWKS_URL), by `kid`, as Supabase's signing
keys are published.

The keys are fetched in a worker thread, never on the event loop, one fetch at a time: every
call waiting for keys shares the fetch in flight. The set is refreshed when it is older than
REFRESH_SECONDS (in the background: the cached keys keep serving) and when a token names a
`kid` it lacks (a key rotated in), but a fetch starts at most once per MIN_REFETCH_SECONDS,
so a flood of tokens with made-up `kid`s cannot turn into a flood of requests to the issuer.
A call waits for a fetch no longer than its caller allows, and not at all while the issuer is
known to be failing (the last fetch failed): a flood of unknown `kid`s while the issuer hangs
must not pile calls up behind a fetch that will time out anyway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from jwt import PyJWK, PyJWTError

from profile_service.runtime.config import ASYMMETRIC_ALGORITHMS

_LOGGER = logging.getLogger(__name__)
# How old the key set may grow before it is fetched again (keys withdrawn by the issuer stop
# being accepted within this time).
REFRESH_SECONDS = 600.0
# The shortest time between two fetches, whatever the tokens ask for.
MIN_REFETCH_SECONDS = 30.0
# The longest a fetch may take, connecting and reading included.
FETCH_TIMEOUT_SECONDS = 5.0
# A JWKS holds a handful of keys; anything much bigger is not one.
MAX_DOCUMENT_BYTES = 1 << 20
# Key types with a public half: a JWKS is public, so an `oct` (HMAC) key in it would let
# anyone who reads it sign tokens.
_ASYMMETRIC_KEY_TYPES = ("EC", "RSA")


class UnknownKey(Exception):
    """The key set has no key with the token's `kid`."""


class SigningKeysUnavailable(Exception):
    """No key set has been fetched yet (the issuer did not answer, or not with a JWKS)."""


class JwksKeySet:
    """The published signing keys, cached; use it from one event loop only."""

    def __init__(
        self,
        url: str,
        *,
        refresh_seconds: float | None = None,
        min_refetch_seconds: float | None = None,
        fetch_timeout_seconds: float | None = None,
    ) -> None:
        # None: the module's constant, read now (so that a test may shorten it for a server).
        self._url = url
        self._refresh_seconds = REFRESH_SECONDS if refresh_seconds is None else refresh_seconds
        self._min_refetch_seconds = (
            MIN_REFETCH_SECONDS if min_refetch_seconds is None else min_refetch_seconds
        )
        self._fetch_timeout_seconds = (
            FETCH_TIMEOUT_SECONDS if fetch_timeout_seconds is None else fetch_timeout_seconds
        )
        self._keys: dict[str, PyJWK] | None = None  # None until a fetch has succeeded
        self._fetched_at = -math.inf  # time.monotonic() of the last successful fetch
        self._attempted_at = -math.inf  # ...and of the start of the last attempt
        self._failing = False  # the last attempt failed
        self._fetch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin fetching the keys in the background (call on the event loop). A failure is
        logged, not raised: the server starts either way and tokens signed with these keys
        are refused until a later fetch succeeds."""
        self._maybe_fetch(time.monotonic())

    async def close(self) -> None:
        """Cancel a fetch in flight (its thread ends within the fetch timeout)."""
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)

    async def key(self, kid: str, wait_seconds: float | None = None) -> PyJWK:
        """The published key named `kid`; raise UnknownKey if the issuer does not publish it,
        SigningKeysUnavailable if no key set could be fetched yet, or if a fetch that could
        tell is still under way after `wait_seconds` (None: as long as it takes), or the last
        fetch failed (then at once)."""
        now = time.monotonic()
        if self._keys is not None and kid in self._keys:
            if now - self._fetched_at >= self._refresh_seconds:
                self._maybe_fetch(now)  # not awaited: the cached key serves meanwhile
            return self._keys[kid]
        # A kid we lack may be a key rotated in since the last fetch: fetch again, unless a
        # fetch started too recently (then the answer would be the same anyway).
        self._maybe_fetch(now)
        if self._fetch is not None:
            if self._failing:
                raise SigningKeysUnavailable
            try:
                # Shielded: a caller that goes away must not cancel the fetch others wait for.
                await asyncio.wait_for(asyncio.shield(self._fetch), wait_seconds)
            except TimeoutError:
                raise SigningKeysUnavailable from None
        if self._keys is None or self._failing:  # the kid may be a key we could not fetch
            raise SigningKeysUnavailable
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownKey from None

    def may_fetch(self, now: float | None = None) -> bool:
        """Whether a kid the set lacks would start a fetch now: none under way, and the last
        one started at least the minimum refetch interval ago."""
        now = time.monotonic() if now is None else now
        return self._fetch is None and now - self._attempted_at >= self._min_refetch_seconds

    def _maybe_fetch(self, now: float) -> None:
        if self.may_fetch(now):
            self._attempted_at = now
            self._fetch = asyncio.get_running_loop().create_task(self._refresh())

    async def _refresh(self) -> None:
        try:
            async with asyncio.timeout(self._fetch_timeout_seconds):
                keys = await asyncio.to_thread(download, self._url, self._fetch_timeout_seconds)
        except Exception as exc:  # any failure keeps the keys we have; the next try will tell
            self._failing = True
            _LOGGER.warning("JWKS fetch from %s failed: %s", self._url, _describe(exc))
        else:
            self._failing = False
            self._keys = keys
            self._fetched_at = time.monotonic()
            _LOGGER.info("JWKS fetched from %s: keys %s", self._url, sorted(keys))
        finally:
            self._fetch = None


def download(url: str, timeout_seconds: float) -> dict[str, PyJWK]:
    """The usable signing keys of the JWKS at `url`, by `kid` (blocking: run it in a thread).
    Raise if it cannot be read within `timeout_seconds` or holds no usable key."""
    # urllib would open file: URLs too (config.py refuses them already; this is the backstop).
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError("the JWKS URL must be http or https")
    deadline = time.monotonic() + timeout_seconds
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout_seconds) as response:  # noqa: S310
        body = bytearray()
        # Read in pieces: the socket timeout bounds each read, the deadline the whole body (a
        # server trickling bytes would otherwise hold the thread for ever).
        while chunk := response.read1(65536):
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
            if time.monotonic() > deadline:
                raise TimeoutError(f"not read within {timeout_seconds} s")
    return parse_key_set(bytes(body))


def parse_key_set(document: bytes) -> dict[str, PyJWK]:
    """The asymmetric signing keys of a JWKS document, by `kid`, each with the algorithm it
    names (`alg`) or its type implies (EC P-256: ES256, RSA: RS256). Keys without a `kid`,
    symmetric ones, encryption keys, keys with private parts and keys PyJWT cannot load are
    left out; raise ValueError if none is left."""
    data: Any = json.loads(document)
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys: dict[str, PyJWK] = {}
    for jwk in data["keys"]:
        if not isinstance(jwk, dict) or not _is_public_signing_key(jwk):
            continue
        try:
            key = PyJWK(jwk)
        except PyJWTError:
            continue
        if key.algorithm_name in ASYMMETRIC_ALGORITHMS:
            keys[jwk["kid"]] = key
    if not keys:
        raise ValueError("no usable signing key in the JWKS document")
    return keys


def _is_public_signing_key(jwk: dict[str, Any]) -> bool:
    kid = jwk.get("kid")
    return (
        isinstance(kid, str)
        and bool(kid)  # tokens name their key by kid: a key without one is never used
        and jwk.get("kty") in _ASYMMETRIC_KEY_TYPES
        and jwk.get("alg") in (None, *ASYMMETRIC_ALGORITHMS)  # absent: implied by the type
        and jwk.get("use", "sig") == "sig"
        and "d" not in jwk  # a private key has no place in a public document
    )


def _describe(exc: Exception) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
