"""JWT_JWKS_URL: tokens verified by `kid` against a JWKS served by a real local HTTP server,
beside JWT_SECRET; the fetches that server sees, and what a slow or absent one changes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from profile_service.auth import jwks, tokens
from profile_service.auth import verify as auth
from profile_service.auth.jwks import JwksKeySet, SigningKeysUnavailable, UnknownKey
from profile_service.transport import server
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    SECRET,
    bearer,
    error_reason,
    rpc_error,
    server_env,
    serving,
    user,
    wait_for,
)

# The shortest time between two fetches, for the servers of this module (30 s in production).
REFETCH_SECONDS = 1.5
Metadata = tuple[tuple[str, str], ...]
UNKNOWN_KEY = "token signed by an unknown key ('kid' not published)"
NO_KID = "token lacks a 'kid' header naming its signing key"


@dataclass(frozen=True)
class SigningKey:
    """A private key, the kid it is published under, and its algorithm."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def es256(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def rs256(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        """The public JWK, as an issuer publishes it (no `alg`: implied by the key type)."""
        text = jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.private.public_key())
        return {**json.loads(text), "kid": self.kid, "use": "sig"}

    def token(self, *, kid: str | None = None, **claims: Any) -> str:
        """A token signed with this key, naming `kid` (default: its own; "": none)."""
        kid = self.kid if kid is None else kid
        return jwt.encode(
            _claims(**claims),
            self.private,
            algorithm=self.algorithm,
            headers={"kid": kid} if kid else None,
        )


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "exp": int(time.time()) + 600,
        "aud": "authenticated",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a fetch given up on leaves a broken pipe behind: expected here


class JwksServer:
    """A JWKS document over HTTP on 127.0.0.1: the keys it serves, how many requests it got,
    and how it answers (after `delay` seconds, with `status`)."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = list(keys)
        self.delay = 0.0
        self.status = 200
        self._requests = 0
        self._lock = threading.Lock()
        this = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with this._lock:
                    this._requests += 1
                    delay, status, keys = this.delay, this.status, list(this.keys)
                time.sleep(delay)
                body = json.dumps({"keys": [k.jwk() for k in keys]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/auth/v1/.well-known/jwks.json"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


ES = SigningKey.es256("es-key-1")
RS = SigningKey.rs256("rs-key-1")


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer([ES, RS])
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _restore_jwks_server(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "jwks_server" in request.fixturenames:
        server: JwksServer = request.getfixturevalue("jwks_server")
        server.keys, server.delay, server.status = [ES, RS], 0.0, 200


@pytest.fixture(scope="module")
def short_refetch() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(jwks, "MIN_REFETCH_SECONDS", REFETCH_SECONDS)
        yield


@pytest.fixture(scope="module")
def served(
    test_db: ThrowawayDatabase, jwks_server: JwksServer, short_refetch: None
) -> Iterator[tuple[server.RunningServer, grpc.Channel]]:
    """A server with JWT_JWKS_URL and JWT_SECRET, once its start-up fetch is done."""
    env = server_env(test_db.service_url, JWT_JWKS_URL=jwks_server.url)
    with serving(env) as (running, channel):
        assert wait_for(lambda: jwks_server.requests >= 1)
        yield running, channel


@pytest.fixture
def channel(served: tuple[server.RunningServer, grpc.Channel]) -> grpc.Channel:
    return served[1]


@pytest.fixture
def fetch_allowed(served: tuple[server.RunningServer, grpc.Channel]) -> Callable[[], bool]:
    """Waits until the server's key set would fetch again for a kid it lacks (the refetch
    interval since the last fetch, which an earlier test may have caused, has passed)."""
    key_set = served[0].jwks
    assert key_set is not None
    return lambda: wait_for(key_set.may_fetch)


@pytest.fixture
def stub(channel: grpc.Channel, admin: object) -> pb_grpc.ProfileServiceStub:
    return pb_grpc.ProfileServiceStub(channel)


def _refused(stub: pb_grpc.ProfileServiceStub, token: str) -> tuple[str, str]:
    """Get with `token`, which must be refused UNAUTHENTICATED: its (reason, message)."""
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=bearer(token), timeout=10))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    return error_reason(error)[0], error.details() or ""


def _not_found(stub: pb_grpc.ProfileServiceStub, metadata: Metadata) -> None:
    """A Get that passes authentication, for a user with no profile yet."""
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=metadata, timeout=10))
    assert error.code() == grpc.StatusCode.NOT_FOUND, error


@pytest.mark.parametrize("key", [ES, RS], ids=["ES256", "RS256"])
def test_tokens_signed_with_a_published_key_act_as_their_user(
    stub: pb_grpc.ProfileServiceStub, key: SigningKey
) -> None:
    owner = str(uuid.uuid4())
    md = bearer(key.token(sub=owner))
    written = stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=41)), metadata=md, timeout=10)
    assert (written.owner_id, written.age) == (owner, 41)
    read = stub.Get(pb.GetRequest(), metadata=md, timeout=10)
    assert (read.owner_id, read.age) == (owner, 41)
    service = bearer(key.token(role="service_role", sub=None))
    assert stub.Get(pb.GetRequest(owner_id=owner), metadata=service, timeout=10).age == 41


def test_hs256_tokens_signed_with_the_secret_are_still_accepted(
    stub: pb_grpc.ProfileServiceStub,
) -> None:
    owner = str(uuid.uuid4())
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=52)), metadata=user(owner), timeout=10)
    assert stub.Get(pb.GetRequest(), metadata=user(owner), timeout=10).owner_id == owner


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused(
    stub: pb_grpc.ProfileServiceStub,
) -> None:
    impostor = SigningKey.es256(ES.kid)
    assert _refused(stub, impostor.token()) == ("TOKEN_INVALID", "invalid token signature")


def test_the_algorithm_is_the_key_s_not_the_token_header_s(
    stub: pb_grpc.ProfileServiceStub,
) -> None:
    # A valid RS256 signature, but the kid names the ES256 key.
    assert _refused(stub, RS.token(kid=ES.kid)) == ("TOKEN_INVALID", "invalid token")
    # HS256 goes to the secret, whatever the kid: an HMAC keyed with the published key's
    # text (algorithm confusion) does not pass.
    forged = _hs256(_claims(), ES.jwk()["x"].encode(), kid=ES.kid)
    assert _refused(stub, forged) == ("TOKEN_INVALID", "invalid token signature")


def _hs256(claims: dict[str, Any], key: bytes, *, kid: str) -> str:
    """An HS256 token made by hand (PyJWT refuses to use public key material as a secret)."""

    def encoded(part: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")

    signing_input = encoded({"alg": "HS256", "typ": "JWT", "kid": kid}) + b"." + encoded(claims)
    signature = hmac.new(key, signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def test_an_unknown_kid_is_refused(stub: pb_grpc.ProfileServiceStub) -> None:
    reason, message = _refused(stub, ES.token(kid="no-such-key"))
    assert (reason, message) == (
        "TOKEN_INVALID",
        "token signed by an unknown key ('kid' not published)",
    )


def test_an_asymmetric_token_without_a_kid_is_refused(stub: pb_grpc.ProfileServiceStub) -> None:
    reason, message = _refused(stub, ES.token(kid=""))
    assert (reason, message) == (
        "TOKEN_INVALID",
        "token lacks a 'kid' header naming its signing key",
    )


def test_a_flood_of_unknown_kids_fetches_the_keys_at_most_twice(
    stub: pb_grpc.ProfileServiceStub, jwks_server: JwksServer, fetch_allowed: Callable[[], bool]
) -> None:
    assert fetch_allowed()  # the flood may cause one fetch
    # As many calls at once as one connection may carry: beyond that, a burst that ends
    # together can have gRPC refuse the next streams (docs/operations.md, section 12).
    flood = server.MAX_STREAMS_PER_CONNECTION
    tokens = [ES.token(kid=f"random-{uuid.uuid4()}") for _ in range(flood)]
    before = jwks_server.requests
    calls = [stub.Get.future(pb.GetRequest(), metadata=bearer(t), timeout=30) for t in tokens]
    codes = {call.exception().code() for call in calls}  # type: ignore[union-attr]
    assert codes == {grpc.StatusCode.UNAUTHENTICATED}
    assert 1 <= jwks_server.requests - before <= 2


def test_a_key_rotated_in_is_picked_up_after_the_refetch_interval(
    stub: pb_grpc.ProfileServiceStub, jwks_server: JwksServer, fetch_allowed: Callable[[], bool]
) -> None:
    assert fetch_allowed()
    _refused(stub, ES.token(kid="not-yet"))  # a fetch now: the next one waits an interval
    fetches = jwks_server.requests
    rotated = SigningKey.es256("es-key-2")
    jwks_server.keys = [ES, RS, rotated]
    assert (
        _refused(stub, rotated.token())[1] == "token signed by an unknown key ('kid' not published)"
    )
    assert jwks_server.requests == fetches  # refused without asking the issuer again
    assert fetch_allowed()  # the refetch interval has passed
    _not_found(stub, bearer(rotated.token()))
    assert jwks_server.requests == fetches + 1
    _not_found(stub, bearer(ES.token()))  # the keys before it still count


def test_a_slow_jwks_server_holds_up_only_the_calls_waiting_for_its_keys(
    channel: grpc.Channel,
    stub: pb_grpc.ProfileServiceStub,
    jwks_server: JwksServer,
    fetch_allowed: Callable[[], bool],
) -> None:
    assert fetch_allowed()
    jwks_server.delay = 2.0
    fetches = jwks_server.requests
    started = time.monotonic()
    waiting = stub.Get.future(
        pb.GetRequest(), metadata=bearer(ES.token(kid="not-published")), timeout=30
    )
    assert wait_for(lambda: jwks_server.requests == fetches + 1)  # the fetch is pending
    health = health_pb2_grpc.HealthStub(channel)
    for answer in (
        lambda: health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status,
        lambda: _not_found(stub, user(uuid.uuid4())),
        lambda: _not_found(stub, bearer(RS.token())),  # a known kid waits for no fetch
    ):
        before = time.monotonic()
        assert answer() in (health_pb2.HealthCheckResponse.SERVING, None)
        assert time.monotonic() - before < 0.5
    assert not waiting.done()
    assert waiting.exception().code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[union-attr]
    assert time.monotonic() - started >= 1.9  # it did wait for the fetch


def _passes_authentication(stub: pb_grpc.ProfileServiceStub, metadata: Metadata) -> bool:
    """A Get for a user with no profile yet: True if it gets past authentication."""
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=metadata, timeout=10))
    return error.code() == grpc.StatusCode.NOT_FOUND


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_jwks_url_that_does_not_answer_stops_neither_the_server_nor_hs256_tokens(
    test_db: ThrowawayDatabase,
) -> None:
    url = f"http://127.0.0.1:{_unused_port()}/jwks.json"
    with serving(server_env(test_db.service_url, JWT_JWKS_URL=url)) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        _not_found(stub, user(uuid.uuid4()))
        assert _refused(stub, ES.token()) == (
            "SIGNING_KEYS_UNAVAILABLE",
            "the token signing keys could not be fetched yet; retry later",
        )


def test_keys_become_usable_once_the_jwks_server_answers(
    test_db: ThrowawayDatabase, short_refetch: None
) -> None:
    down = JwksServer([ES])
    down.status = 503
    try:
        env = server_env(test_db.service_url, JWT_JWKS_URL=down.url)
        with serving(env) as (running, channel):
            stub = pb_grpc.ProfileServiceStub(channel)
            assert wait_for(lambda: down.requests >= 1)
            assert _refused(stub, ES.token())[0] == "SIGNING_KEYS_UNAVAILABLE"
            _not_found(stub, user(uuid.uuid4()))
            down.status = 200
            assert running.jwks is not None and wait_for(running.jwks.may_fetch)
            # The first call starts a fetch; while the last one failed, it is told at once to
            # retry (SIGNING_KEYS_UNAVAILABLE). The fetch succeeds, and the retry passes.
            assert wait_for(lambda: _passes_authentication(stub, bearer(ES.token())))
    finally:
        down.close()


def test_a_jwks_url_alone_accepts_its_keys_and_no_hs256_token(
    test_db: ThrowawayDatabase, jwks_server: JwksServer
) -> None:
    env = server_env(test_db.service_url, JWT_JWKS_URL=jwks_server.url, JWT_SECRET="")
    with serving(env) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        _not_found(stub, bearer(ES.token()))
        hs256 = tokens.mint(SECRET, role="authenticated", sub=str(uuid.uuid4()))
        assert _refused(stub, hs256) == ("TOKEN_INVALID", "invalid token")


# The key set on its own, against the same kind of server.


def test_waiting_calls_share_one_fetch(jwks_server: JwksServer) -> None:
    jwks_server.delay = 0.3

    async def main() -> list[Any]:
        keys = JwksKeySet(jwks_server.url)
        return await asyncio.gather(
            *(keys.key(kid) for kid in [ES.kid, RS.kid] + [f"unknown-{i}" for i in range(50)]),
            return_exceptions=True,
        )

    before = jwks_server.requests
    found = asyncio.run(main())
    assert [key.algorithm_name for key in found[:2]] == ["ES256", "RS256"]
    assert all(isinstance(e, UnknownKey) for e in found[2:])
    assert jwks_server.requests - before == 1


def test_a_stale_key_set_is_refreshed_in_the_background(jwks_server: JwksServer) -> None:
    before = jwks_server.requests

    async def main() -> None:
        # Stale as soon as fetched.
        keys = JwksKeySet(jwks_server.url, refresh_seconds=0, min_refetch_seconds=0)
        assert (await keys.key(ES.kid)).algorithm_name == "ES256"
        jwks_server.delay = 1.0
        started = time.monotonic()
        assert (await keys.key(ES.kid)).algorithm_name == "ES256"  # the cached key, at once
        assert time.monotonic() - started < 0.2
        while jwks_server.requests - before < 2:  # ...while the set is fetched again
            await asyncio.sleep(0.01)
        await keys.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert jwks_server.requests - before == 2


def test_a_fetch_is_given_up_after_its_timeout(jwks_server: JwksServer) -> None:
    jwks_server.delay = 2.0

    async def main() -> None:
        keys = JwksKeySet(jwks_server.url, fetch_timeout_seconds=0.3)
        with pytest.raises(SigningKeysUnavailable):
            await keys.key(ES.kid)

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 1.0


def test_an_unknown_kid_waits_for_a_fetch_no_longer_than_it_is_allowed(
    jwks_server: JwksServer,
) -> None:
    async def main() -> float:
        keys = JwksKeySet(jwks_server.url, min_refetch_seconds=0)
        assert (await keys.key(ES.kid)).algorithm_name == "ES256"
        jwks_server.delay = 2.0  # the next fetch hangs
        started = time.monotonic()
        with pytest.raises(SigningKeysUnavailable):
            await keys.key("rotated-in", wait_seconds=0.2)
        took = time.monotonic() - started
        await keys.close()
        return took

    assert 0.2 <= asyncio.run(main()) < 0.5


def test_while_fetches_fail_an_unknown_kid_is_answered_at_once(jwks_server: JwksServer) -> None:
    async def main() -> None:
        keys = JwksKeySet(jwks_server.url, min_refetch_seconds=0, fetch_timeout_seconds=0.3)
        assert (await keys.key(ES.kid)).algorithm_name == "ES256"
        jwks_server.delay = 2.0
        with pytest.raises(SigningKeysUnavailable):
            await keys.key("rotated-in")  # waits for the fetch, which times out: now failing
        for kid in (f"made-up-{i}" for i in range(20)):  # each starts or finds a fetch
            started = time.monotonic()
            with pytest.raises(SigningKeysUnavailable):
                await keys.key(kid)
            assert time.monotonic() - started < 0.2  # the issuer hangs for 2 s
        assert (await keys.key(ES.kid)).algorithm_name == "ES256"  # known keys still serve
        await keys.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_kid_call_waits_for_a_hanging_issuer_at_most_half_its_deadline(
    stub: pb_grpc.ProfileServiceStub, jwks_server: JwksServer, fetch_allowed: Callable[[], bool]
) -> None:
    assert fetch_allowed()
    jwks_server.delay = 3.0
    started = time.monotonic()
    error = rpc_error(
        lambda: stub.Get(pb.GetRequest(), metadata=bearer(ES.token(kid="new-key")), timeout=1)
    )
    took = time.monotonic() - started
    # Not DEADLINE_EXCEEDED after the whole second: the answer leaves the caller time to retry.
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_reason(error)[0] == "SIGNING_KEYS_UNAVAILABLE"
    assert 0.8 * auth.KEY_WAIT_SHARE <= took < 0.95
