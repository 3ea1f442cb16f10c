"""Bearer token → verified caller, and the interceptor that requires one on every API call.

Like PostgREST's Auth module, this only turns a token into claims and a database role; what a
caller may do is decided by the service (per RPC) and by row-level security (per row).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import grpc
import grpc.aio
import jwt

from profile_service import errors
from profile_service.auth.jwks import JwksKeySet, SigningKeysUnavailable, UnknownKey
from profile_service.domain.caller import ALLOWED_ROLES, Caller, DbRole
from profile_service.domain.validation import is_uuid
from profile_service.errors import PermissionDenied, Reason, ServiceError, Unauthenticated
from profile_service.runtime.config import ASYMMETRIC_ALGORITHMS, Settings
from profile_service.transport import call_notes
from profile_service.transport.unary_interceptor import Behavior, UnaryInterceptor

# Clock skew allowed between the token's issuer and us, on `exp` and `nbf` (documented).
LEEWAY_SECONDS = 5.0
_TIME_CLAIMS = ("exp", "nbf", "iat")


def _unauthenticated(message: str, reason: str = Reason.TOKEN_INVALID) -> Unauthenticated:
    return Unauthenticated(message, reason)


class TokenVerifier:
    """Verifies JWTs with a fixed algorithm and key, or with the published key their `kid`
    names (`jwks`); remembers verified tokens until they expire.

    The cache mirrors PostgREST's JWT cache: a token verified once is not re-verified on every
    call. It is bounded, and an entry is never used past its token's `exp`, nor longer than
    CACHE_SECONDS after it was verified (a token claiming to last a millennium).
    """

    CACHE_SECONDS = 300.0

    def __init__(
        self,
        settings: Settings,
        cache_size: int = 10_000,
        leeway_seconds: float = LEEWAY_SECONDS,
        jwks: JwksKeySet | None = None,
    ) -> None:
        key = settings.jwt_public_key or settings.jwt_secret
        if not key and jwks is None:
            raise ValueError("no JWT key configured")
        # During a rotation the previous secret is still accepted, so callers holding tokens
        # signed with it are not refused while the new one rolls out.
        self._keys: list[str | jwt.PyJWK] = []
        if key:
            self._keys.append(key)
        if key and settings.jwt_secret_previous:
            self._keys.append(settings.jwt_secret_previous)
        self._jwks = jwks
        # The algorithm is configuration, never read from the token header (no `alg: none`).
        self._algorithms = [settings.jwt_algorithm]
        self._audience = settings.jwt_audience
        self._options: dict[str, Any] = {
            "require": ["exp"],
            # Supabase tokens carry aud=authenticated: ignore aud unless we are told to check it.
            "verify_aud": settings.jwt_audience is not None,
        }
        self._cache: OrderedDict[str, Caller] = OrderedDict()
        self._cache_size = cache_size
        self._leeway = leeway_seconds
        self._lock = threading.Lock()

    async def verify(self, token: str, wait_seconds: float | None = None) -> Caller:
        """The caller a token stands for; raise Unauthenticated or PermissionDenied if it is not
        acceptable. Awaits only when the token's signing key must be fetched first, and then
        at most `wait_seconds` (None: the fetch's own timeout)."""
        now = time.time()
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and cached.expires_at > now:
            return cached
        keys, algorithms = await self._keys_for(token, wait_seconds)
        caller = self._decode(token, keys, algorithms)
        cached_until = min(caller.expires_at, now + self.CACHE_SECONDS)
        with self._lock:
            self._cache[token] = dataclasses.replace(caller, expires_at=cached_until)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return caller

    async def _keys_for(
        self, token: str, wait_seconds: float | None
    ) -> tuple[Sequence[str | jwt.PyJWK], list[str]]:
        """The keys to try on `token` and the algorithms they allow: with a JWKS, an asymmetric
        token's header picks the published key (whose own algorithm is then the only one
        allowed); any other token goes to the configured secret(s)."""
        if self._jwks is None:
            return self._keys, self._algorithms
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise _unauthenticated("invalid token") from exc
        if header.get("alg") not in ASYMMETRIC_ALGORITHMS:
            if not self._keys:  # JWKS only: an HS256 (or `none`) token has no key to match
                raise _unauthenticated("invalid token")
            return self._keys, self._algorithms
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthenticated("token lacks a 'kid' header naming its signing key")
        try:
            key = await self._jwks.key(kid, wait_seconds)
        except UnknownKey as exc:
            raise _unauthenticated("token signed by an unknown key ('kid' not published)") from exc
        except SigningKeysUnavailable as exc:
            raise _unauthenticated(
                "the token signing keys could not be fetched yet; retry later",
                Reason.SIGNING_KEYS_UNAVAILABLE,
            ) from exc
        return [key], [key.algorithm_name]

    def _decode(self, token: str, keys: Sequence[str | jwt.PyJWK], algorithms: list[str]) -> Caller:
        claims: dict[str, Any] | None = None
        for key in keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=algorithms,
                    audience=self._audience,
                    options=self._options,  # type: ignore[arg-type]
                    leeway=self._leeway,
                )
                break
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError as exc:
                raise _unauthenticated("token expired", Reason.TOKEN_EXPIRED) from exc
            except jwt.InvalidAudienceError as exc:
                raise _unauthenticated("token audience not accepted") from exc
            except jwt.MissingRequiredClaimError as exc:
                raise _unauthenticated(f"token lacks the {exc.claim!r} claim") from exc
            except jwt.InvalidTokenError as exc:
                raise _unauthenticated("invalid token") from exc
        if claims is None:
            raise _unauthenticated("invalid token signature")
        return _caller_from_claims(claims)


def _caller_from_claims(claims: dict[str, Any]) -> Caller:
    for name in _TIME_CLAIMS:
        value = claims.get(name)
        # PyJWT takes "1700000000" too (it calls int()); RFC 7519 says NumericDate, a number.
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _unauthenticated(f"token {name!r} must be a number")
    sub = claims.get("sub")
    if sub is not None and not is_uuid(sub):
        raise _unauthenticated("token 'sub' is not a UUID")
    role = claims.get("role")
    if role not in ALLOWED_ROLES:
        raise PermissionDenied("token role is not allowed", Reason.ROLE_NOT_ALLOWED)
    if role == "authenticated" and sub is None:
        raise _unauthenticated("token lacks the 'sub' claim")
    # The role handed to the database is the allowlist's own string, never the raw claim.
    db_role: DbRole = "authenticated" if role == "authenticated" else "service_role"
    try:
        expires_at = float(claims["exp"])
    except OverflowError:  # an integer beyond any float: valid for ever, as far as PyJWT goes
        expires_at = math.inf
    return Caller(
        role=db_role,
        sub=sub,
        claims_json=json.dumps(claims, separators=(",", ":")),
        expires_at=expires_at,
    )


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    """The token of the `authorization: Bearer <token>` metadata; raise Unauthenticated if
    absent."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            raise _unauthenticated("authorization metadata must be 'Bearer <token>'")
    raise _unauthenticated("missing authorization metadata", Reason.TOKEN_MISSING)


# The share of a call's remaining time it may spend waiting for the JWKS to be fetched.
KEY_WAIT_SHARE = 0.5
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("profile_caller")


def current_caller() -> Caller:
    """The verified caller of the RPC being handled (set by AuthInterceptor)."""
    return _CALLER.get()


class AuthInterceptor(UnaryInterceptor):
    """Requires a verified token on the API's calls (health and reflection are not wrapped).

    Verification happens in the handler's own task, where the contextvar it sets is visible.
    """

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """Verify the caller's token, then run `behavior` with the caller set."""
        return self._authenticated(behavior)

    def _authenticated(self, behavior: Behavior) -> Behavior:
        verifier = self._verifier

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            time_left = context.time_remaining()
            # A key fetch may take half the call's time: the other half is the database's.
            wait = None if time_left is None else time_left * KEY_WAIT_SHARE
            try:
                caller = await verifier.verify(bearer_token(context.invocation_metadata()), wait)
            except ServiceError as exc:
                await errors.abort(context, exc)
            call_notes.note("role", caller.role)
            token = _CALLER.set(caller)
            try:
                return await behavior(request, context)
            finally:
                _CALLER.reset(token)

        return handle
