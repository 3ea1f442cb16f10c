"""Purge: service_role only, the retention floor, dry runs, batches and concurrent runs."""

import logging
import threading
import uuid

import grpc
import psycopg
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import (
    field_violations,
    lock_waiters,
    rpc_error,
    server_env,
    service,
    serving,
    user,
    wait_for,
)


def _seed_deleted(admin: psycopg.Connection, days_ago: list[float]) -> list[uuid.UUID]:
    owners = [uuid.uuid4() for _ in days_ago]
    with admin.cursor() as cur:
        cur.executemany(
            "INSERT INTO profile.profiles (owner_id, age, deleted_at) "
            "VALUES (%s, 30, now() - %s * interval '1 day')",
            list(zip(owners, days_ago, strict=True)),
        )
    return owners


def _remaining(admin: psycopg.Connection) -> set[uuid.UUID]:
    return {r[0] for r in admin.execute("SELECT owner_id FROM profile.profiles").fetchall()}


def test_users_cannot_purge(stub) -> None:
    error = rpc_error(lambda: stub.Purge(pb.PurgeRequest(), metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


# Far beyond a century, `now() - interval` leaves PostgreSQL's timestamp range: the request is
# refused as invalid, not failed as INTERNAL by the database.
@pytest.mark.parametrize("days", [1, 29, -5, 36_501, 2**31 - 1])
def test_retention_outside_the_allowed_range_is_invalid(stub, days: int) -> None:
    request = pb.PurgeRequest(retention_days=days)
    error = rpc_error(lambda: stub.Purge(request, metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "retention_days" in field_violations(error)


@pytest.mark.parametrize("size", [-1, 10_001])
def test_batch_size_out_of_range_is_invalid(stub, size: int) -> None:
    request = pb.PurgeRequest(batch_size=size)
    error = rpc_error(lambda: stub.Purge(request, metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "batch_size" in field_violations(error)


def test_dry_run_counts_and_deletes_nothing(stub, admin: psycopg.Connection) -> None:
    owners = _seed_deleted(admin, [31, 45, 10])
    active = uuid.uuid4()
    admin.execute("INSERT INTO profile.profiles (owner_id) VALUES (%s)", (active,))
    response = stub.Purge(pb.PurgeRequest(dry_run=True), metadata=service(), timeout=5)
    assert response.purge_count == 2
    assert _remaining(admin) == {*owners, active}


def test_purge_removes_exactly_the_profiles_past_retention(stub, admin: psycopg.Connection) -> None:
    expired = _seed_deleted(admin, [30.01, 31, 400])
    kept = _seed_deleted(admin, [29.9, 1, 0])
    active = uuid.uuid4()
    admin.execute("INSERT INTO profile.profiles (owner_id) VALUES (%s)", (active,))
    response = stub.Purge(pb.PurgeRequest(batch_size=2), metadata=service(), timeout=10)
    assert response.purge_count == len(expired)
    assert _remaining(admin) == {*kept, active}
    again = stub.Purge(pb.PurgeRequest(), metadata=service(), timeout=10)
    assert again.purge_count == 0


def test_a_longer_retention_keeps_more(stub, admin: psycopg.Connection) -> None:
    _seed_deleted(admin, [31, 59])
    old = _seed_deleted(admin, [61])
    response = stub.Purge(pb.PurgeRequest(retention_days=60), metadata=service(), timeout=10)
    assert response.purge_count == 1
    assert not set(old) & _remaining(admin)


def test_two_concurrent_purges_count_each_row_once(stub, admin: psycopg.Connection) -> None:
    _seed_deleted(admin, [31 + i % 50 for i in range(3000)])
    counts: list[int] = []
    errors: list[grpc.RpcError] = []
    barrier = threading.Barrier(2)

    def purge() -> None:
        barrier.wait()
        try:
            counts.append(
                stub.Purge(
                    pb.PurgeRequest(batch_size=100), metadata=service(), timeout=30
                ).purge_count
            )
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(counts) == 3000
    assert _remaining(admin) == set()


def test_a_raised_minimum_is_the_default_and_the_floor(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    env = server_env(test_db.service_url, PURGE_MIN_RETENTION_DAYS="45")
    _seed_deleted(admin, [40, 50])
    with serving(env) as (_, channel):
        raised = pb_grpc.ProfileServiceStub(channel)
        request = pb.PurgeRequest(retention_days=40)
        error = rpc_error(lambda: raised.Purge(request, metadata=service(), timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "between 45 and" in field_violations(error)["retention_days"]
        dry = raised.Purge(pb.PurgeRequest(dry_run=True), metadata=service(), timeout=5)
    assert dry.purge_count == 1  # only the profile deleted 50 days ago


def test_a_cancelled_purge_stops_its_batch_in_flight_and_takes_no_more(
    stub, admin: psycopg.Connection, test_db: ThrowawayDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="profile_service.access")
    owners = _seed_deleted(admin, [60, 50, 40])
    with psycopg.connect(test_db.admin_url) as blocker:
        # Hold the oldest row, so that the purge's first batch waits on it.
        blocker.execute(
            "SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (owners[0],)
        )
        call = stub.Purge.future(pb.PurgeRequest(batch_size=1), metadata=service(), timeout=30)
        assert wait_for(lambda: lock_waiters(admin) == 1)
        call.cancel()
        assert wait_for(
            lambda: any(
                getattr(r, "method", "").endswith("/Purge") and r.code == "CANCELLED"
                for r in caplog.records
            )
        )
        # The server cancels the statement the caller no longer waits for: it stops waiting
        # on the lock while the lock is still held...
        assert wait_for(lambda: lock_waiters(admin) == 0)
        blocker.rollback()
    # ...so nothing was deleted, even once the lock is gone: the statement no longer exists,
    # and the cancelled call starts no other batch.
    assert _remaining(admin) == set(owners)


def test_a_purge_outlives_the_connection_age_that_rebalances_clients(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    """A long purge is not cut when its connection reaches GRPC_MAX_CONNECTION_AGE_SECONDS."""
    owners = _seed_deleted(admin, [60, 50])
    env = server_env(
        test_db.service_url,
        GRPC_MAX_CONNECTION_AGE_SECONDS="1",
        GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS="60",
        SHUTDOWN_GRACE_SECONDS="1",
        DB_TIMEOUT_SECONDS="10",
    )
    with serving(env) as (_, channel), psycopg.connect(test_db.admin_url) as blocker:
        blocker.execute(
            "SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (owners[0],)
        )
        # The purge waits on the lock for 3 s, while the server sends GOAWAY after about 1 s.
        release = threading.Timer(3, blocker.rollback)
        release.start()
        try:
            response = pb_grpc.ProfileServiceStub(channel).Purge(
                pb.PurgeRequest(batch_size=1), metadata=service(), timeout=20
            )
        finally:
            release.cancel()
    assert response.purge_count == 2
    assert _remaining(admin) == set()
