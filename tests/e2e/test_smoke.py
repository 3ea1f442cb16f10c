import grpc
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import user


def test_upsert_then_get(stub) -> None:
    md = user("00000000-0000-4000-8000-000000000001")
    created = stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=md, timeout=5)
    got = stub.Get(pb.GetRequest(), metadata=md, timeout=5)
    assert got == created
    assert got.age == 30


def test_no_token(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.Get(pb.GetRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
