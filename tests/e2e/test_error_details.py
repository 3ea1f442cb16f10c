"""Every failed call carries a google.rpc.ErrorInfo whose reason a program can branch on
(errors.py), beside the message for people; INVALID_ARGUMENT also lists its fields."""

import uuid

import grpc
import psycopg
from google.protobuf import field_mask_pb2

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.e2e.conftest import (
    bearer,
    error_reason,
    field_violations,
    rpc_error,
    service,
    user,
)

DOMAIN = "profile.v1.ProfileService"


def test_each_status_has_its_reason(stub: pb_grpc.ProfileServiceStub) -> None:
    me, someone = uuid.uuid4(), uuid.uuid4()
    cases = {
        "TOKEN_MISSING": lambda: stub.Get(pb.GetRequest(), timeout=5),
        "TOKEN_INVALID": lambda: stub.Get(pb.GetRequest(), metadata=bearer("x.y.z"), timeout=5),
        "PROFILE_NOT_FOUND": lambda: stub.Get(pb.GetRequest(), metadata=user(me), timeout=5),
        "NOT_OWN_PROFILE": lambda: stub.Get(
            pb.GetRequest(owner_id=str(someone)), metadata=user(me), timeout=5
        ),
        "ROLE_NOT_ALLOWED": lambda: stub.Purge(pb.PurgeRequest(), metadata=user(me), timeout=5),
        "INVALID_FIELDS": lambda: stub.Upsert(
            pb.UpsertRequest(
                profile=pb.Profile(age=3),
                update_mask=field_mask_pb2.FieldMask(paths=["age"]),
            ),
            metadata=user(me),
            timeout=5,
        ),
    }
    for reason, call in cases.items():
        assert error_reason(rpc_error(call)) == (reason, DOMAIN), reason


def test_invalid_argument_keeps_its_field_violations_beside_the_reason(
    stub: pb_grpc.ProfileServiceStub,
) -> None:
    request = pb.UpsertRequest(profile=pb.Profile(age=3, height_cm=1))
    error = rpc_error(lambda: stub.Upsert(request, metadata=user(uuid.uuid4()), timeout=5))
    assert error_reason(error) == ("INVALID_FIELDS", DOMAIN)
    assert set(field_violations(error)) == {"profile.age", "profile.height_cm"}
    assert any(k == "x-request-id" for k, _ in error.trailing_metadata() or ())


def test_a_database_timeout_says_so(
    stub: pb_grpc.ProfileServiceStub, admin: psycopg.Connection, test_db: object
) -> None:
    sub = uuid.uuid4()
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=user(sub), timeout=5)
    with psycopg.connect(test_db.admin_url) as locker:  # type: ignore[attr-defined]
        locker.execute("SELECT 1 FROM profile.profiles WHERE owner_id = %s FOR UPDATE", (sub,))
        request = pb.UpsertRequest(profile=pb.Profile(age=31))
        error = rpc_error(lambda: stub.Upsert(request, metadata=user(sub), timeout=1))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(error) == ("DATABASE_TIMEOUT", DOMAIN)
    assert stub.Get(pb.GetRequest(owner_id=str(sub)), metadata=service(), timeout=5).age == 30
