"""Stalled clients, a frozen or vanished database and a draining server starve nobody, and
every caller gets an answer it can act on before its deadline (issue "Stall-proof")."""

import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import psycopg
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    error_reason,
    lock_waiters,
    rpc_error,
    server_env,
    serving,
    serving_through_proxy,
    user,
    wait_for,
)
from tests.e2e.probes import NOT_SERVING, SERVING, health, scrape
from tests.e2e.tcp_proxy import TcpProxy

HEALTH_NAMES = ("", "profile.v1.ProfileService", "liveness")


def _saved_user(stub: pb_grpc.ProfileServiceStub) -> tuple[str, tuple[tuple[str, str], ...]]:
    sub = str(uuid.uuid4())
    md = user(sub)
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=md, timeout=5)
    return sub, md


def _get_latencies(stub: pb_grpc.ProfileServiceStub, md: object, n: int) -> list[float]:
    """Seconds per authenticated Get, each of which must succeed within 1 s."""
    took = []
    for _ in range(n):
        started = time.perf_counter()
        assert stub.Get(pb.GetRequest(), metadata=md, timeout=1).age == 30
        took.append(time.perf_counter() - started)
    return took


def _assert_serving_again(
    channel: grpc.Channel, stub: pb_grpc.ProfileServiceStub, md: object
) -> None:
    """Once the database is back: health SERVING by itself, and the saved profile readable."""
    assert wait_for(lambda: health(channel) == SERVING)
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == 30


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def test_a_thousand_stalled_calls_leave_gets_and_health_served(
    stub: pb_grpc.ProfileServiceStub, channel: grpc.Channel, running_server: object
) -> None:
    _, md = _saved_user(stub)
    idle = _get_latencies(stub, md, 200)
    port = running_server.port  # type: ignore[attr-defined]
    # One client, one connection: 1,000 Gets that send headers and no request (no token
    # needed), and 16 reflection streams that send nothing. The old thread-per-call server
    # gave each a thread until the client went away: 16 were enough to starve everyone.
    stalled = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.stalled_client", f"127.0.0.1:{port}", "1000", "16"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stalled.stdout is not None and stalled.stdout.readline().strip() == "held"
        loaded = _get_latencies(stub, md, 200)
        for name in HEALTH_NAMES:
            assert health(channel, name) == SERVING, name
        assert stalled.poll() is None, "the stalled client must still hold its calls"
    finally:
        stalled.communicate(input="", timeout=30)
    # Every Get above answered within its 1 s deadline, and (contract section 4) within 3x
    # its idle p99; 10 ms of slack for a shared 2-core VM, where one slow Get moves a p99.
    idle_ms, loaded_ms = _p99(idle) * 1000, _p99(loaded) * 1000
    print(f"Get p99 idle {idle_ms:.2f} ms, with 1,016 stalled calls {loaded_ms:.2f} ms")
    assert loaded_ms <= 3 * idle_ms + 10


@pytest.fixture
def proxied_server(
    test_db: ThrowawayDatabase,
) -> Iterator[tuple[TcpProxy, grpc.Channel, object]]:
    """A server whose database connections (pool and health probe) go through a proxy."""
    with serving_through_proxy(test_db.service_url, DB_POOL_SIZE="4") as (proxy, running, ch):
        yield proxy, ch, running


def test_a_frozen_database_leaves_health_answered_and_every_call_unavailable_in_time(
    proxied_server: tuple[TcpProxy, grpc.Channel, object],
) -> None:
    proxy, channel, running = proxied_server
    stub = pb_grpc.ProfileServiceStub(channel)
    _, md = _saved_user(stub)
    proxy.freeze()
    # Many more calls than the old server's 16 threads, all waiting on the frozen database.
    with futures.ThreadPoolExecutor(max_workers=40) as pool:
        calls = [
            pool.submit(rpc_error, lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=2))
            for _ in range(40)
        ]
        # Once they are stuck (4 on the pool's connections, the rest waiting for one, beside
        # any health probe), every probe is still answered (within its 1 s deadline):
        # readiness follows the database, liveness stays SERVING so the pod is not restarted.
        stats = running.pool_stats  # type: ignore[attr-defined]
        assert wait_for(lambda: stats()["requests_waiting"] >= 36)
        for name in HEALTH_NAMES:
            assert health(channel, name) != -1, name
        assert health(channel, "liveness") == SERVING
        assert wait_for(lambda: health(channel) == NOT_SERVING)
        errors = [call.result() for call in calls]
    # Answered by the service before the deadline, as retryable: not DEADLINE_EXCEEDED.
    assert {error.code() for error in errors} == {grpc.StatusCode.UNAVAILABLE}
    # The four with a connection waited on the database; the others, for a connection.
    reasons = {error_reason(error)[0] for error in errors}
    assert reasons == {"DATABASE_NOT_ANSWERING", "DATABASE_POOL_EXHAUSTED"}
    proxy.thaw()
    _assert_serving_again(channel, stub, md)


def test_while_the_database_refuses_connections_calls_fail_at_once(
    proxied_server: tuple[TcpProxy, grpc.Channel, object],
) -> None:
    proxy, channel, _ = proxied_server
    stub = pb_grpc.ProfileServiceStub(channel)
    _, md = _saved_user(stub)
    proxy.cut()
    assert wait_for(lambda: health(channel) == NOT_SERVING)
    for timeout in (5.0, None):  # with a deadline, and without one
        started = time.monotonic()
        error = rpc_error(lambda t=timeout: stub.Get(pb.GetRequest(), metadata=md, timeout=t))
        # Not after waiting out a budget for a pool connection: at once, saying why.
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "database unreachable",
        )
        assert error_reason(error)[0] == "DATABASE_UNREACHABLE"
        assert time.monotonic() - started < 1.0
    proxy.restore()
    _assert_serving_again(channel, stub, md)


def test_after_repeated_outages_the_service_is_back_in_two_seconds_with_a_full_pool(
    proxied_server: tuple[TcpProxy, grpc.Channel, object],
) -> None:
    proxy, channel, running = proxied_server
    stub = pb_grpc.ProfileServiceStub(channel)
    _, md = _saved_user(stub)
    metrics_port = running.metrics_port  # type: ignore[attr-defined]

    def pool_size() -> float:
        return scrape(metrics_port)[("profile_db_pool_size", ())]

    def get_ok() -> bool:
        try:
            return stub.Get(pb.GetRequest(), metadata=md, timeout=0.5).age == 30
        except grpc.RpcError:
            return False

    for _ in range(4):
        proxy.cut()
        assert wait_for(lambda: health(channel) == NOT_SERVING)
        # Long enough for psycopg_pool's doubling retry delay to have grown (1, 2, 4 s).
        time.sleep(4)
        proxy.restore()
        restored = time.monotonic()
        assert wait_for(get_ok, timeout=5)
        # Serving again within 2 s of the database's return, outage after outage.
        assert time.monotonic() - restored < 2.0
        assert wait_for(lambda: pool_size() == 4, timeout=10)


def test_a_call_arriving_while_the_server_drains_is_unavailable(
    test_db: ThrowawayDatabase,
) -> None:
    env = server_env(test_db.service_url, DB_TIMEOUT_SECONDS="10")
    with serving(env) as (running, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        sub, md = _saved_user(stub)
        with (
            psycopg.connect(test_db.admin_url) as locker,
            psycopg.connect(test_db.admin_url, autocommit=True) as watcher,
        ):
            locker.execute("SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,))
            held = stub.Upsert.future(
                pb.UpsertRequest(profile=pb.Profile(age=31)), metadata=md, timeout=8
            )
            assert wait_for(lambda: lock_waiters(watcher) == 1)
            stopping = threading.Thread(target=running.stop, args=(5,))
            stopping.start()
            try:
                assert wait_for(lambda: health(channel) != SERVING)
                # The in-flight call keeps the server draining; a new one is refused, with a
                # status a client retries elsewhere.
                error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=2))
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            finally:
                locker.rollback()
                stopping.join()
        assert held.result().age == 31  # the call in flight was let finish


def test_a_short_deadline_that_leaves_the_database_time_is_served(
    stub: pb_grpc.ProfileServiceStub,
) -> None:
    # A Get takes a few milliseconds here. The old fixed 50 ms margin answered every call with
    # a deadline under 50 ms UNAVAILABLE ("no time left"), and a retry policy retried in vain.
    _, md = _saved_user(stub)
    _get_latencies(stub, md, 20)  # warm: connections and the token cache
    served = 0
    for _ in range(20):
        try:
            served += stub.Get(pb.GetRequest(), metadata=md, timeout=0.025).age == 30
        except grpc.RpcError as exc:
            # On a loaded machine a call may really run out of time, or the database be slow.
            assert exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert served >= 15, served
