"""A database that answers but refuses (read-only after a failover, disk full) is UNAVAILABLE
with the reason, and the failed call's log line carries the SQLSTATE, never the error's text."""

import logging
import time
import uuid

import grpc
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    rpc_error,
    server_env,
    serving,
    serving_through_proxy,
    user,
    wait_for,
)
from tests.e2e.probes import NOT_SERVING, SERVING, health


def _logged_sqlstate(caplog: pytest.LogCaptureFixture, method: str) -> str | None:
    for record in caplog.records:
        if getattr(record, "method", "").endswith(method) and hasattr(record, "sqlstate"):
            return str(record.sqlstate)
    return None


def test_a_read_only_database_refuses_writes_as_unavailable_and_says_so_in_health(
    test_db: ThrowawayDatabase, admin: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="profile_service.access")
    sub = uuid.uuid4()
    admin.execute("INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)", (sub,))
    # What a standby, or a database set read-only, looks like to every session.
    url = make_conninfo(test_db.service_url, options="-c default_transaction_read_only=on")
    with serving(server_env(url)) as (_, channel):
        stub = pb_grpc.ProfileServiceStub(channel)
        error = rpc_error(
            lambda: stub.Upsert(
                pb.UpsertRequest(profile=pb.Profile(age=31)), metadata=user(sub), timeout=5
            )
        )
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "read-only" in (error.details() or "")
        assert wait_for(lambda: _logged_sqlstate(caplog, "/Upsert") == "25006")
        # Reads go on, so the pod stays ready; the `writes` status tells operators.
        assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5).age == 30
        assert health(channel) == SERVING
        assert wait_for(lambda: health(channel, "writes") == NOT_SERVING)
    assert admin.execute("SELECT age FROM profile.profiles").fetchone() == (30,)


def test_writes_status_is_serving_on_a_writable_database(channel: grpc.Channel) -> None:
    assert wait_for(lambda: health(channel, "writes") == SERVING)


def test_a_full_disk_is_unavailable_naming_the_cause_not_the_connection(
    stub: pb_grpc.ProfileServiceStub,
    test_db: ThrowawayDatabase,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="profile_service.access")
    function = "profile.restart_own_deleted_profile()"
    with psycopg.connect(test_db.admin_url, autocommit=True) as conn:
        # Stand in for PostgreSQL failing to extend a file: the same SQLSTATE, 53100.
        conn.execute(f"ALTER FUNCTION {function} RENAME TO restart_saved")
        conn.execute(
            f"""CREATE FUNCTION {function} RETURNS void LANGUAGE plpgsql AS $$
                BEGIN
                  RAISE EXCEPTION 'could not extend file: No space left on device'
                    USING ERRCODE = 'disk_full';
                END $$"""
        )
        try:
            request = pb.UpsertRequest(profile=pb.Profile(age=30, limitations="private"))
            error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
        finally:
            conn.execute(f"DROP FUNCTION {function}")
            conn.execute(
                "ALTER FUNCTION profile.restart_saved() RENAME TO restart_own_deleted_profile"
            )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error.details() == "the database is out of resources (53100)"
    assert wait_for(lambda: _logged_sqlstate(caplog, "/Upsert") == "53100")
    logged = "\n".join(str(r.__dict__) for r in caplog.records)
    assert "No space left" not in logged and "private" not in logged


def test_connection_slots_exhausted_are_out_of_resources_logged_once_then_recover(
    test_db: ThrowawayDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection slot taken (SQLSTATE 53300 at connect): calls are told so, at once, and
    the operators' log says it once for the episode, not once per call."""
    caplog.set_level(logging.INFO)
    with (
        serving_through_proxy(test_db.service_url, DB_POOL_SIZE="2") as (proxy, _, channel),
        psycopg.connect(test_db.admin_url, autocommit=True) as admin,
    ):
        stub = pb_grpc.ProfileServiceStub(channel)
        sub = uuid.uuid4()
        stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=user(sub), timeout=5)
        proxy.cut()  # this server's connections break
        proxy.restore()
        # ... and no new one finds a slot: the database's limit is the sessions it has now.
        (sessions,) = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        admin.execute(f'ALTER DATABASE "{test_db.name}" CONNECTION LIMIT {sessions}')
        try:

            def reason() -> str:
                error = rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=user(sub), timeout=2))
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                return error.details() or ""

            assert wait_for(lambda: "too many connections" in reason())
            for _ in range(20):  # at once, every call, with the cause
                started = time.monotonic()
                assert reason() == "the database has no connection slot free (too many connections)"
                assert time.monotonic() - started < 0.5
            assert health(channel) == NOT_SERVING
        finally:
            admin.execute(f'ALTER DATABASE "{test_db.name}" CONNECTION LIMIT -1')

        def served() -> bool:
            try:
                return stub.Get(pb.GetRequest(), metadata=user(sub), timeout=2).age == 30
            except grpc.RpcError:
                return False

        assert wait_for(served)  # slots free again: served without a restart
    episode = [r for r in caplog.records if "too many connections" in r.getMessage()]
    print(f"{len(episode)} log lines name the cause:", sorted({r.name for r in episode}))
    assert [r.name for r in episode if r.name.startswith("profile_service")] == [
        "profile_service.storage.health"
    ]
