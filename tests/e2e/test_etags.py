"""Etags (AIP-154, contract v1.1): strong, new after every write, and preconditions checked in
the same statement as the write: ABORTED and nothing written when they do not hold."""

import threading
import uuid

import grpc
import psycopg

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import error_reason, lock_waiters, rpc_error, user, wait_for


def _upsert(stub: pb_grpc.ProfileServiceStub, md: object, etag: str = "", **fields: object):
    profile = pb.Profile(etag=etag, **fields)  # type: ignore[arg-type]
    return stub.Upsert(pb.UpsertRequest(profile=profile), metadata=md, timeout=5)


def test_the_etag_is_quoted_stable_between_reads_and_new_after_each_write(stub) -> None:
    md = user(uuid.uuid4())
    first = _upsert(stub, md, age=30)
    assert first.etag.startswith('"') and first.etag.endswith('"')
    get = lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5)  # noqa: E731
    assert get().etag == get().etag == first.etag
    second = _upsert(stub, md, age=31)
    deleted = stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)
    assert len({first.etag, second.etag, deleted.etag}) == 3


def test_a_write_with_the_current_etag_goes_through_and_a_stale_one_is_aborted(
    stub, admin: psycopg.Connection
) -> None:
    sub = uuid.uuid4()
    md = user(sub)
    first = _upsert(stub, md, age=30)
    second = _upsert(stub, md, first.etag, age=31)  # the current tag: written
    assert second.age == 31
    error = rpc_error(lambda: _upsert(stub, md, first.etag, age=99))  # stale now
    assert error.code() == grpc.StatusCode.ABORTED
    assert error_reason(error)[0] == "ETAG_MISMATCH"
    error = rpc_error(
        lambda: stub.SoftDelete(pb.SoftDeleteRequest(etag=first.etag), metadata=md, timeout=5)
    )
    assert error.code() == grpc.StatusCode.ABORTED
    row = admin.execute(
        "SELECT age, deleted_at FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone()
    assert row == (31, None)  # neither aborted write changed anything
    deleted = stub.SoftDelete(pb.SoftDeleteRequest(etag=second.etag), metadata=md, timeout=5)
    assert deleted.HasField("deleted_at")


def test_an_etag_for_a_profile_that_does_not_exist_is_aborted(stub, admin) -> None:
    sub = uuid.uuid4()
    error = rpc_error(lambda: _upsert(stub, user(sub), '"0123456789abcdef"', age=30))
    assert error.code() == grpc.StatusCode.ABORTED
    assert admin.execute("SELECT count(*) FROM profile.profiles").fetchone() == (0,)


def test_someone_elses_profile_stays_permission_denied_whatever_the_etag(stub) -> None:
    owner = uuid.uuid4()
    theirs = _upsert(stub, user(owner), age=30)
    request = pb.UpsertRequest(profile=pb.Profile(owner_id=str(owner), etag=theirs.etag, age=50))
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


def test_of_two_writers_racing_on_one_etag_exactly_one_wins(
    stub, admin: psycopg.Connection, test_db: ThrowawayDatabase
) -> None:
    sub = uuid.uuid4()
    md = user(sub)
    start = _upsert(stub, md, age=30)
    results: dict[int, object] = {}
    with psycopg.connect(test_db.admin_url) as locker:
        # Both writers get past the request and wait on the row, holding the same tag.
        locker.execute("SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,))

        def write(age: int) -> None:
            try:
                results[age] = _upsert(stub, md, start.etag, age=age).age
            except grpc.RpcError as exc:
                results[age] = exc.code()

        writers = [threading.Thread(target=write, args=(age,)) for age in (41, 42)]
        for writer in writers:
            writer.start()
        assert wait_for(lambda: lock_waiters(admin) == 2)
    for writer in writers:
        writer.join()
    outcomes = sorted(map(str, results.values()))
    assert len(results) == 2 and outcomes.count("StatusCode.ABORTED") == 1, results
    winner = next(age for age, result in results.items() if result == age)
    assert stub.Get(pb.GetRequest(), metadata=md, timeout=5).age == winner
