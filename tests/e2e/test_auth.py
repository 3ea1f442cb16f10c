"""The contract's status table for tokens: UNAUTHENTICATED vs PERMISSION_DENIED."""

import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import SECRET, bearer, rpc_error, server_env, serving

SUB = "00000000-0000-4000-8000-0000000000a1"


def _claims(**overrides: Any) -> dict[str, Any]:
    # An hour: the cases below are built at import, well before they run.
    claims: dict[str, Any] = {"sub": SUB, "role": "authenticated", "exp": int(time.time()) + 3600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _signed(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def _rsa_private_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# Each case with the reason the caller is told, so that a case cannot pass for another reason.
UNAUTHENTICATED_CASES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "no token": ((), "missing authorization metadata"),
    "not a bearer scheme": (
        (("authorization", f"Basic {_signed(_claims())}"),),
        "must be 'Bearer <token>'",
    ),
    "bearer without a token": ((("authorization", "Bearer "),), "must be 'Bearer <token>'"),
    "malformed token": (bearer("not.a.jwt"), "invalid token"),
    "signed with another secret": (
        bearer(_signed(_claims(), "another-secret-of-sufficient-size!!")),
        "invalid token signature",
    ),
    "alg none": (bearer(jwt.encode(_claims(), None, algorithm="none")), "invalid token"),
    "RS256 token to an HS256 server": (
        bearer(_signed(_claims(), _rsa_private_pem().decode(), "RS256")),
        "invalid token",
    ),
    "expired": (bearer(_signed(_claims(exp=int(time.time()) - 120))), "token expired"),
    "no exp": (bearer(_signed(_claims(exp=None))), "token lacks the 'exp' claim"),
    "sub is not a UUID": (bearer(_signed(_claims(sub="user-42"))), "'sub' is not a UUID"),
    "sub is a number": (bearer(_signed(_claims(sub=42))), "invalid token"),
    "service_role with a sub that is not a UUID": (
        bearer(_signed(_claims(role="service_role", sub="svc-7"))),
        "'sub' is not a UUID",
    ),
    "authenticated without sub": (
        bearer(_signed(_claims(sub=None))),
        "token lacks the 'sub' claim",
    ),
}

PERMISSION_DENIED_CASES: dict[str, tuple[tuple[str, str], ...]] = {
    "role postgres": bearer(_signed(_claims(role="postgres"))),
    "role anon": bearer(_signed(_claims(role="anon"))),
    "role missing": bearer(_signed(_claims(role=None))),
    "role is a list": bearer(_signed(_claims(role=["service_role"]))),
}


@pytest.mark.parametrize(
    ("metadata", "reason"), UNAUTHENTICATED_CASES.values(), ids=UNAUTHENTICATED_CASES
)
def test_bad_tokens_are_unauthenticated(
    stub: pb_grpc.ProfileServiceStub, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=metadata, timeout=5))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reason in (error.details() or "")


@pytest.mark.parametrize("metadata", PERMISSION_DENIED_CASES.values(), ids=PERMISSION_DENIED_CASES)
def test_roles_outside_the_allowlist_are_denied(
    stub: pb_grpc.ProfileServiceStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=metadata, timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_audience_is_ignored_when_not_configured(stub: pb_grpc.ProfileServiceStub) -> None:
    # Supabase tokens carry aud=authenticated; with no JWT_AUDIENCE they must be accepted.
    md = bearer(_signed(_claims(aud="authenticated")))
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND  # authenticated; just no profile yet


@pytest.fixture(scope="module")
def audience_stub(test_db: ThrowawayDatabase) -> Iterator[pb_grpc.ProfileServiceStub]:
    with serving(server_env(test_db.service_url, JWT_AUDIENCE="profile-service")) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel)


@pytest.mark.parametrize(
    ("aud", "code"),
    [
        ("profile-service", grpc.StatusCode.NOT_FOUND),
        (["other", "profile-service"], grpc.StatusCode.NOT_FOUND),
        ("authenticated", grpc.StatusCode.UNAUTHENTICATED),
        (None, grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_audience_is_checked_when_configured(
    audience_stub: pb_grpc.ProfileServiceStub, aud: object, code: grpc.StatusCode
) -> None:
    md = bearer(_signed(_claims(aud=aud)))
    error = rpc_error(lambda: audience_stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    assert error.code() == code


@pytest.fixture(scope="module")
def rsa_server(test_db: ThrowawayDatabase) -> Iterator[tuple[pb_grpc.ProfileServiceStub, str]]:
    private_pem = _rsa_private_pem()
    public_pem = (
        serialization.load_pem_private_key(private_pem, password=None)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    env = server_env(test_db.service_url, JWT_PUBLIC_KEY=public_pem, JWT_SECRET="")
    with serving(env) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel), private_pem.decode()


def test_an_asymmetric_public_key_can_be_configured(
    rsa_server: tuple[pb_grpc.ProfileServiceStub, str],
) -> None:
    stub, private_pem = rsa_server
    good = bearer(_signed(_claims(), private_pem, "RS256"))
    assert rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=good, timeout=5)).code() == (
        grpc.StatusCode.NOT_FOUND
    )
    # An HS256 token "signed" with the public key must not pass (algorithm confusion).
    forged = bearer(_signed(_claims()))
    assert rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=forged, timeout=5)).code() == (
        grpc.StatusCode.UNAUTHENTICATED
    )


def test_health_and_reflection_need_no_token(channel: grpc.Channel) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "profile.v1.ProfileService"):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "profile.v1.ProfileService" in names


def test_a_valid_user_token_reaches_its_own_profile(stub: pb_grpc.ProfileServiceStub) -> None:
    owner = str(uuid.uuid4())
    md = bearer(_signed(_claims(sub=owner)))
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=33)), metadata=md, timeout=5)
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == 33
