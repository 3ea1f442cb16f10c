"""Token verification without a server: claims → caller, and the verified-token cache."""

import asyncio
import datetime
import time
from collections.abc import Callable

import grpc
import jwt
import pytest

from profile_service.auth.verify import TokenVerifier, bearer_token
from profile_service.domain.caller import Caller
from profile_service.errors import ServiceError
from profile_service.runtime.config import Settings

SECRET = "k" * 40
SUB = "00000000-0000-4000-8000-000000000001"


def _verifier(**env: str) -> TokenVerifier:
    return TokenVerifier(
        Settings.from_env({"DATABASE_URL": "postgresql://x@h/d", "JWT_SECRET": SECRET, **env}),
        leeway_seconds=0,
    )


def _verify(verifier: TokenVerifier, token: str) -> Caller:
    return asyncio.run(verifier.verify(token))


@pytest.fixture
def later(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Moves the wall clock forward for the verifier's cache and for PyJWT's checks alike,
    without sleeping: PyJWT reads `datetime.now`, the cache `time.time`."""
    ahead = [0.0]
    real_time = time.time

    class _Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> "_Later":
            moment = datetime.datetime.fromtimestamp(real_time() + ahead[0], tz)
            return cls.fromtimestamp(moment.timestamp(), tz)

    monkeypatch.setattr(time, "time", lambda: real_time() + ahead[0])
    monkeypatch.setattr(jwt.api_jwt, "datetime", _Later)

    def move(seconds: float) -> None:
        ahead[0] += seconds

    return move


def _token(**claims: object) -> str:
    payload = {"sub": SUB, "role": "authenticated", "exp": time.time() + 60, **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, SECRET, "HS256")


def test_claims_become_the_caller_with_an_allowlisted_role() -> None:
    caller = _verify(_verifier(), _token(role="service_role", sub=None))
    assert (caller.role, caller.sub, caller.is_user) == ("service_role", None, False)
    assert '"role":"service_role"' in caller.claims_json


def test_a_cached_token_is_not_used_past_its_expiry(later: Callable[[float], None]) -> None:
    verifier = _verifier()
    token = _token(exp=time.time() + 1)
    assert _verify(verifier, token).sub == SUB
    later(1.2)
    with pytest.raises(ServiceError) as info:
        _verify(verifier, token)
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_the_cache_is_bounded() -> None:
    verifier = TokenVerifier(
        Settings.from_env({"DATABASE_URL": "postgresql://x@h/d", "JWT_SECRET": SECRET}),
        cache_size=3,
    )
    for i in range(10):
        _verify(verifier, _token(jti=str(i)))
    assert len(verifier._cache) == 3


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Token abc"),), (("authorization", "Bearer"),)],
)
def test_bearer_token_requires_the_bearer_scheme(metadata: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ServiceError):
        bearer_token(metadata)


def test_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token((("authorization", "bearer abc"),)) == "abc"


def test_an_expiry_beyond_any_float_is_accepted_and_cached() -> None:
    verifier = _verifier()
    token = _token(exp=10**400)
    assert _verify(verifier, token).expires_at == float("inf")
    assert _verify(verifier, token).sub == SUB


@pytest.mark.parametrize("claim", ["exp", "nbf"])
def test_an_infinite_time_claim_is_an_invalid_token(claim: str) -> None:
    with pytest.raises(ServiceError) as info:
        _verify(_verifier(), _token(**{claim: float("inf")}))
    assert (info.value.code, info.value.message) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "invalid token",
    )


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claims_must_be_numbers_not_numeric_strings(claim: str) -> None:
    value = str(int(time.time()) + (60 if claim == "exp" else -60))
    with pytest.raises(ServiceError) as info:
        _verify(_verifier(), _token(**{claim: value}))
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert f"{claim!r} must be a number" in info.value.message


def test_a_token_claiming_to_last_for_ever_is_reverified_after_the_cache_lifetime(
    monkeypatch: pytest.MonkeyPatch, later: Callable[[float], None]
) -> None:
    decoded = []
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        decoded.append(1)
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("profile_service.auth.verify.jwt.decode", counting_decode)
    monkeypatch.setattr(TokenVerifier, "CACHE_SECONDS", 0.3)
    verifier = _verifier()
    token = _token(exp=10**400)
    for _ in range(3):
        assert _verify(verifier, token).sub == SUB
    assert len(decoded) == 1  # cached...
    later(0.4)
    assert _verify(verifier, token).sub == SUB
    assert len(decoded) == 2  # ...but not for ever
