"""Undelete (AIP-164, contract v1.1): a soft-deleted, not yet purged profile comes back with all
its data, for its owner or service_role; active is ALREADY_EXISTS, absent or purged NOT_FOUND."""

import uuid

import grpc
import psycopg

from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import error_reason, rpc_error, service, user


def _deleted(stub, sub: uuid.UUID) -> pb.Profile:
    md = user(sub)
    profile = pb.Profile(age=30, limitations="knee", available_equipment=["rings"])
    stub.Upsert(pb.UpsertRequest(profile=profile), metadata=md, timeout=5)
    return stub.SoftDelete(pb.SoftDeleteRequest(), metadata=md, timeout=5)


def test_an_owner_gets_its_profile_back_with_all_its_data(stub) -> None:
    sub = uuid.uuid4()
    deleted = _deleted(stub, sub)
    restored = stub.Undelete(pb.UndeleteRequest(), metadata=user(sub), timeout=5)
    assert (restored.id, restored.age, restored.limitations) == (deleted.id, 30, "knee")
    assert list(restored.available_equipment) == ["rings"]
    assert not restored.HasField("deleted_at") and not restored.HasField("purge_time")
    assert restored.etag != deleted.etag
    assert restored.updated_at.ToNanoseconds() > deleted.updated_at.ToNanoseconds()
    assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5).age == 30
    # A retry after success: the profile is active.
    error = rpc_error(lambda: stub.Undelete(pb.UndeleteRequest(), metadata=user(sub), timeout=5))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_reason(error)[0] == "PROFILE_ACTIVE"


def test_absent_or_purged_is_not_found(stub, admin: psycopg.Connection) -> None:
    error = rpc_error(
        lambda: stub.Undelete(pb.UndeleteRequest(), metadata=user(uuid.uuid4()), timeout=5)
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
    sub = uuid.uuid4()
    _deleted(stub, sub)
    admin.execute("DELETE FROM profile.profiles WHERE owner_id = %s", (sub,))  # purged
    error = rpc_error(lambda: stub.Undelete(pb.UndeleteRequest(), metadata=user(sub), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_service_role_undeletes_anyones_and_a_user_only_its_own(stub) -> None:
    sub = uuid.uuid4()
    _deleted(stub, sub)
    mine_only = pb.UndeleteRequest(owner_id=str(sub))
    error = rpc_error(lambda: stub.Undelete(mine_only, metadata=user(uuid.uuid4()), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    error = rpc_error(lambda: stub.Undelete(pb.UndeleteRequest(), metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT  # service_role must name the owner
    restored = stub.Undelete(mine_only, metadata=service(), timeout=5)
    assert restored.age == 30 and not restored.HasField("deleted_at")


def test_an_etag_precondition_guards_undelete(stub, admin: psycopg.Connection) -> None:
    sub = uuid.uuid4()
    deleted = _deleted(stub, sub)
    stale = pb.UndeleteRequest(etag='"not-the-current-one"')
    error = rpc_error(lambda: stub.Undelete(stale, metadata=user(sub), timeout=5))
    assert error.code() == grpc.StatusCode.ABORTED
    assert admin.execute(
        "SELECT deleted_at IS NOT NULL FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone() == (True,)
    current = pb.UndeleteRequest(etag=deleted.etag)
    assert not stub.Undelete(current, metadata=user(sub), timeout=5).HasField("deleted_at")
