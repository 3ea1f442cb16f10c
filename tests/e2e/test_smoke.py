import uuid

import grpc
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from tests import pgbouncer
from tests.e2e.conftest import user
from tests.pgbouncer import VIA_PGBOUNCER


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


@pytest.mark.skipif(not VIA_PGBOUNCER, reason="the PgBouncer pass's own check (make test)")
def test_the_pgbouncer_pass_really_goes_through_pgbouncer(stub, test_db) -> None:
    before = pgbouncer.transactions(test_db.service_url, test_db.name)
    sub = uuid.uuid4()
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=user(sub), timeout=5)
    assert stub.Get(pb.GetRequest(), metadata=user(sub), timeout=5).age == 30
    assert pgbouncer.transactions(test_db.service_url, test_db.name) >= before + 2
