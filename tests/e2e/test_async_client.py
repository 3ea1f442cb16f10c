"""AsyncProfileClient against a real server: every RPC, typed errors, an async token provider."""

import asyncio
import uuid

import grpc
import pytest

from profile_service.auth import tokens
from profile_service.client import (
    AsyncProfileClient,
    InvalidArgument,
    NotFound,
    ServiceError,
)
from profile_service.transport import server
from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import SECRET


@pytest.fixture
def target(running_server: server.RunningServer, admin: object) -> str:
    return f"127.0.0.1:{running_server.port}"


def test_every_rpc_and_its_errors_through_the_asyncio_client(target: str) -> None:
    owner, absent = str(uuid.uuid4()), str(uuid.uuid4())
    asked = 0

    async def user_token() -> str:  # as an async session refresh would
        nonlocal asked
        asked += 1
        await asyncio.sleep(0)
        return tokens.mint(SECRET, role="authenticated", sub=owner)

    async def scenario() -> None:
        async with AsyncProfileClient(target, token=user_token) as me:
            created = await me.upsert(pb.Profile(age=30, primary_goal="strength"))
            assert (created.owner_id, created.age) == (owner, 30)
            updated = await me.upsert(pb.Profile(age=31, primary_goal="x"), update_mask=["age"])
            assert (updated.age, updated.primary_goal) == (31, "strength")
            assert (await me.get()).etag == updated.etag
            with pytest.raises(InvalidArgument) as invalid:
                await me.upsert(pb.Profile(age=3))
            assert [v.field for v in invalid.value.violations] == ["profile.age"]
            assert invalid.value.request_id
            assert (await me.soft_delete(etag=updated.etag)).HasField("purge_time")
            with pytest.raises(NotFound):
                await me.get()
            assert (await me.undelete()).age == 31
        service_token = tokens.mint(SECRET, role="service_role")
        async with AsyncProfileClient(target, token=service_token) as service:
            found = await service.batch_get_profiles([owner])
            assert [p.age for p in found] == [31]
            with pytest.raises(NotFound) as missing:
                await service.batch_get_profiles([owner, absent])
            assert missing.value.missing == [absent]
            assert await service.purge(dry_run=True) == 0
        async with AsyncProfileClient(target, token=service_token, timeout=1e-6) as hurried:
            with pytest.raises(ServiceError) as late:
                await hurried.get(owner)
            assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    asyncio.run(scenario())
    assert asked == 7  # once per call of the user's, failed ones included
