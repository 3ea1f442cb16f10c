"""A real server on a real port, against the run's throwaway database."""

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
import psycopg
import pytest

from profile_service.auth import tokens
from profile_service.runtime.config import Settings
from profile_service.transport import server
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.tcp_proxy import TcpProxy, through, upstream_of
from tests.pgbouncer import VIA_PGBOUNCER

SECRET = "test-secret-that-is-long-enough-for-hs256!"
Metadata = tuple[tuple[str, str], ...]


def server_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment a test server runs with."""
    return {
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "GRPC_PORT": "0",
        "METRICS_PORT": "0",
        "WORKERS": "1",
        "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
        "DB_TIMEOUT_SECONDS": "2",
        # Behind PgBouncer in transaction mode (the suite's second pass), as documented.
        **({"DB_PREPARE": "false"} if VIA_PGBOUNCER else {}),
        **overrides,
    }


@contextmanager
def serving(
    env: dict[str, str], **options: Any
) -> Iterator[tuple[server.RunningServer, grpc.Channel]]:
    """A server started with `env` (and server.start's `options`) on an ephemeral port, and a
    channel to it."""
    running = server.start(Settings.from_env(env), host="127.0.0.1", **options)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, channel
    finally:
        running.stop(grace=1)


@contextmanager
def serving_through_proxy(
    database_url: str, **overrides: str
) -> Iterator[tuple[TcpProxy, server.RunningServer, grpc.Channel]]:
    """A server whose database connections (pool and health probe) go through a proxy the
    test can cut, freeze or slow; the proxy is thawed and cut at the end."""
    proxy = TcpProxy(upstream_of(database_url))
    proxy.start()
    try:
        with serving(server_env(through(proxy, database_url), **overrides)) as (running, ch):
            yield proxy, running, ch
    finally:
        proxy.thaw()
        proxy.cut()


@pytest.fixture(scope="session")
def running_server(test_db: ThrowawayDatabase) -> Iterator[server.RunningServer]:
    """The service, started once for the run on an ephemeral port."""
    with serving(server_env(test_db.service_url)) as (running, _):
        yield running


@pytest.fixture(scope="session")
def channel(running_server: server.RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{running_server.port}") as ch:
        yield ch


@pytest.fixture
def stub(channel: grpc.Channel, admin: object) -> pb_grpc.ProfileServiceStub:
    """A client stub; depending on `admin` empties the table after each test."""
    return pb_grpc.ProfileServiceStub(channel)


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


def user(sub: uuid.UUID | str) -> Metadata:
    """Metadata of a signed-in user."""
    return bearer(tokens.mint(SECRET, role="authenticated", sub=str(sub)))


def service() -> Metadata:
    """Metadata of an internal service."""
    return bearer(tokens.mint(SECRET, role="service_role"))


@pytest.fixture
def new_user() -> Callable[[], tuple[str, Metadata]]:
    """Make a fresh user id and its metadata."""

    def make() -> tuple[str, Metadata]:
        sub = str(uuid.uuid4())
        return sub, user(sub)

    return make


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """Make the call, which must fail; return the error."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def field_violations(error: grpc.RpcError) -> dict[str, str]:
    """The google.rpc.BadRequest field violations of an error, field → description."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    found: dict[str, str] = {}
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found.update({v.field: v.description for v in bad_request.field_violations})
    return found


def error_reason(error: grpc.RpcError) -> tuple[str, str]:
    """The google.rpc.ErrorInfo (reason, domain) of an error's status details."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, "no google.rpc.Status in the trailers"
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, info.domain
    raise AssertionError("no ErrorInfo in the status details")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll `predicate` until it holds (True) or `timeout` seconds pass (False)."""
    stop = time.monotonic() + timeout
    while time.monotonic() < stop:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def lock_waiters(admin: psycopg.Connection) -> int:
    """Sessions of the current database waiting on a lock (`admin` must be autocommit: inside
    a transaction, pg_stat_activity is a snapshot)."""
    row = admin.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ).fetchone()
    return 0 if row is None else int(row[0])


@pytest.fixture(autouse=True)
def _empty_table_afterwards(admin: psycopg.Connection) -> None:
    """Every end-to-end test leaves the profiles table empty (the `admin` fixture truncates it
    afterwards), so no test depends on which ran before it."""
