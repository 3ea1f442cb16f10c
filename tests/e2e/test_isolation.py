"""Users calling at once each see only their own profile; claims never leak between calls."""

import threading
import uuid
from collections.abc import Iterator

import grpc
import pytest

from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import server_env, serving, user


def _each_user_sees_only_their_own(stub: pb_grpc.ProfileServiceStub, users: int, rounds: int):
    owners = [str(uuid.uuid4()) for _ in range(users)]
    for i, owner in enumerate(owners):
        profile = pb.Profile(age=20 + i, primary_goal=f"goal of {owner}")
        stub.Upsert(pb.UpsertRequest(profile=profile), metadata=user(owner), timeout=5)
    mismatches: list[str] = []
    errors: list[grpc.StatusCode] = []

    def read_own(owner: str) -> None:
        md = user(owner)
        for _ in range(rounds):
            try:
                got = stub.Get(pb.GetRequest(), metadata=md, timeout=10)
            except grpc.RpcError as exc:
                errors.append(exc.code())
                continue
            if got.owner_id != owner or got.primary_goal != f"goal of {owner}":
                mismatches.append(owner)

    threads = [threading.Thread(target=read_own, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return mismatches, errors


def test_many_users_calling_concurrently_each_see_only_their_own(stub) -> None:
    mismatches, errors = _each_user_sees_only_their_own(stub, users=24, rounds=20)
    assert errors == []
    assert mismatches == []


@pytest.fixture
def single_connection_stub(
    test_db: ThrowawayDatabase,
) -> Iterator[pb_grpc.ProfileServiceStub]:
    env = server_env(test_db.service_url, DB_POOL_SIZE="1")
    with serving(env) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel)


def test_one_pooled_connection_alternating_users_never_mixes_claims(
    single_connection_stub: pb_grpc.ProfileServiceStub, admin: object
) -> None:
    mismatches, errors = _each_user_sees_only_their_own(single_connection_stub, users=8, rounds=25)
    assert errors == []
    assert mismatches == []
