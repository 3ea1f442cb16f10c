"""Faults: the database going away, deadlines, SIGTERM mid-call. The service must recover."""

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    lock_waiters,
    rpc_error,
    server_env,
    serving,
    serving_through_proxy,
    user,
    wait_for,
)
from tests.e2e.probes import NOT_SERVING, SERVING, free_port, health, scrape
from tests.e2e.tcp_proxy import TcpProxy


@pytest.fixture
def proxied(test_db: ThrowawayDatabase) -> Iterator[tuple[TcpProxy, grpc.Channel]]:
    with serving_through_proxy(test_db.service_url) as (proxy, _, channel):
        yield proxy, channel


def test_database_outage_is_unavailable_within_deadline_then_recovers(
    proxied: tuple[TcpProxy, grpc.Channel],
) -> None:
    proxy, channel = proxied
    stub = pb_grpc.ProfileServiceStub(channel)
    md = user(_a_user_aged_30(stub))

    proxy.cut()
    for _ in range(3):  # broken pooled connections and refused new ones alike
        # UNAVAILABLE, not DEADLINE_EXCEEDED: the server answered within the caller's deadline.
        error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=1.5))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert wait_for(lambda: health(channel) == NOT_SERVING)
    assert health(channel, "") == NOT_SERVING  # overall health follows the database too
    assert health(channel, "liveness") == SERVING  # unready, but not to be restarted

    proxy.restore()
    assert wait_for(lambda: health(channel) == SERVING)
    assert health(channel, "") == SERVING
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == 30


def test_a_database_that_hangs_turns_health_not_serving_then_recovers(
    proxied: tuple[TcpProxy, grpc.Channel],
) -> None:
    proxy, channel = proxied
    stub = pb_grpc.ProfileServiceStub(channel)
    md = user(_a_user_aged_30(stub))

    # Connections stay open but nothing comes back: no error for the pool or the health check
    # to see, and no statement_timeout, since the database never gets the statement. The
    # service stops waiting within the call's budget: UNAVAILABLE, before the deadline.
    proxy.freeze()
    error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=1))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert wait_for(lambda: health(channel) == NOT_SERVING)
    assert health(channel, "liveness") == SERVING

    proxy.thaw()
    assert wait_for(lambda: health(channel) == SERVING)
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == 30


def test_a_slow_database_is_unavailable_before_the_callers_deadline(
    stub: pb_grpc.ProfileServiceStub, test_db: ThrowawayDatabase
) -> None:
    sub = _a_user_aged_30(stub)
    with psycopg.connect(test_db.admin_url) as locker:
        locker.execute("SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,))
        request = pb.UpsertRequest(profile=pb.Profile(age=31))
        error = rpc_error(lambda: stub.Upsert(request, metadata=user(sub), timeout=1.0))
    # UNAVAILABLE, not DEADLINE_EXCEEDED: the server gave up before the caller's deadline.
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    # The row lock held the write back, and the timed-out write left nothing behind.
    assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5).age == 30


def _a_user_aged_30(stub: pb_grpc.ProfileServiceStub) -> uuid.UUID:
    """A new user, with a profile saved (age 30) while the database is fine."""
    sub = uuid.uuid4()
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=user(sub), timeout=5)
    return sub


def test_sigterm_lets_in_flight_calls_finish_on_every_worker_then_exits_zero(
    test_db: ThrowawayDatabase, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **server_env(
            test_db.service_url,
            GRPC_PORT=str(port),
            METRICS_PORT=str(metrics_port),
            WORKERS="2",
        ),
    }
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "profile_service", "serve"], env=env, stdout=log, stderr=log
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
            stub = pb_grpc.ProfileServiceStub(channel)
            sub = _a_user_aged_30(stub)
            results: list[object] = []
            with psycopg.connect(test_db.admin_url) as locker:
                # Hold the row so the calls below stay in flight until we let go.
                locker.execute(
                    "SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,)
                )

                def call(age: int) -> None:
                    request = pb.UpsertRequest(profile=pb.Profile(age=age))
                    # A connection of its own, so the kernel may hand it to either worker.
                    options = [("grpc.use_local_subchannel_pool", 1)]
                    with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as own:
                        try:
                            results.append(
                                pb_grpc.ProfileServiceStub(own)
                                .Upsert(request, metadata=user(sub), timeout=8)
                                .age
                            )
                        except grpc.RpcError as exc:
                            results.append(exc.code())

                threads = [threading.Thread(target=call, args=(40 + i,)) for i in range(4)]
                for t in threads:
                    t.start()
                with psycopg.connect(test_db.admin_url, autocommit=True) as watcher:
                    assert wait_for(lambda: lock_waiters(watcher) == 4)
                # The parent sums its workers' metrics.
                samples = scrape(metrics_port)
                key = ("profile_requests_total", (("code", "OK"), ("method", "Upsert")))
                assert samples[key] == 1
                process.send_signal(signal.SIGTERM)
                # Both workers have begun to drain, and the calls they hold keep them up.
                drained = tmp_path / "server.log"
                assert wait_for(lambda: drained.read_text().count("draining calls") == 2)
                assert process.poll() is None, "exited before its calls finished"
            for t in threads:
                t.join()
        assert sorted(results) == [40, 41, 42, 43]  # type: ignore[type-var]
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


def test_an_unexpected_database_error_is_internal_without_detail(
    stub: pb_grpc.ProfileServiceStub, test_db: ThrowawayDatabase
) -> None:
    rename = "ALTER FUNCTION profile.restart_own_deleted_profile() RENAME TO {}"
    with psycopg.connect(test_db.admin_url, autocommit=True) as conn:
        conn.execute(rename.format("restart_gone"))
        try:
            request = pb.UpsertRequest(profile=pb.Profile(age=30, limitations="private"))
            error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
        finally:
            conn.execute(
                rename.replace("restart_own_deleted_profile", "restart_gone").format(
                    "restart_own_deleted_profile"
                )
            )
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details() == "internal error"


def test_an_exhausted_pool_is_unavailable_before_the_callers_deadline(
    test_db: ThrowawayDatabase,
) -> None:
    # A long statement timeout: the held write must outlast the other caller's deadline.
    env = server_env(test_db.service_url, DB_POOL_SIZE="1", DB_TIMEOUT_SECONDS="10")
    with serving(env) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        sub = _a_user_aged_30(stub)
        with (
            psycopg.connect(test_db.admin_url) as locker,
            psycopg.connect(test_db.admin_url, autocommit=True) as watcher,
        ):
            locker.execute("SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,))
            # The pool's one connection is taken by a write waiting on the lock...
            held = stub.Upsert.future(
                pb.UpsertRequest(profile=pb.Profile(age=31)), metadata=user(sub), timeout=5
            )
            assert wait_for(lambda: lock_waiters(watcher) == 1)
            # ...so another caller's read waits for a connection, and gives up in time.
            error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=user(sub), timeout=1))
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            locker.rollback()
        assert held.result().age == 31
        # Once the connection is free again, the pool serves as before.
        assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5).age == 31
