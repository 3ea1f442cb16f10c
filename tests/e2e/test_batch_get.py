"""BatchGetProfiles (AIP-231, contract v1.1): service_role only, 1 to 1000 ids, request order,
duplicates and soft-deleted profiles included, all or nothing with the missing ids named."""

import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import field_violations, rpc_error, service, user


def _saved(stub, age: int) -> str:
    sub = uuid.uuid4()
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=age)), metadata=user(sub), timeout=5)
    return str(sub)


def test_profiles_come_back_in_request_order_with_duplicates_and_deleted_ones(stub) -> None:
    a, b, c = _saved(stub, 31), _saved(stub, 32), _saved(stub, 33)
    stub.SoftDelete(pb.SoftDeleteRequest(), metadata=user(c), timeout=5)
    request = pb.BatchGetProfilesRequest(owner_ids=[c, a, b, a.upper()])
    answer = stub.BatchGetProfiles(request, metadata=service(), timeout=5)
    assert [p.age for p in answer.profiles] == [33, 31, 32, 31]
    assert answer.profiles[0].HasField("deleted_at") and answer.profiles[0].HasField("purge_time")
    assert all(p.etag for p in answer.profiles)


def test_one_absent_profile_fails_the_batch_naming_it(stub) -> None:
    present, gone = _saved(stub, 40), str(uuid.uuid4())
    request = pb.BatchGetProfilesRequest(owner_ids=[present, gone])
    error = rpc_error(lambda: stub.BatchGetProfiles(request, metadata=service(), timeout=5))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    named = []
    for detail in status.details:
        info = error_details_pb2.ResourceInfo()
        if detail.Unpack(info):
            named.append(info.resource_name)
    assert named == [gone]


def test_only_service_role_and_only_1_to_1000_uuids(stub) -> None:
    mine = _saved(stub, 50)
    request = pb.BatchGetProfilesRequest(owner_ids=[mine])
    error = rpc_error(lambda: stub.BatchGetProfiles(request, metadata=user(mine), timeout=5))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    for ids, field in (
        ([], "owner_ids"),
        ([mine] * 1001, "owner_ids"),
        ([mine, "not-a-uuid"], "owner_ids[1]"),
    ):
        bad = pb.BatchGetProfilesRequest(owner_ids=ids)
        error = rpc_error(lambda r=bad: stub.BatchGetProfiles(r, metadata=service(), timeout=5))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in field_violations(error)


def test_a_thousand_ids_in_one_call(stub) -> None:
    owners = [_saved(stub, 13 + i % 100) for i in range(20)]
    request = pb.BatchGetProfilesRequest(owner_ids=owners * 50)  # 1000, with duplicates
    answer = stub.BatchGetProfiles(request, metadata=service(), timeout=10)
    assert len(answer.profiles) == 1000
    assert [p.owner_id for p in answer.profiles[:20]] == owners
