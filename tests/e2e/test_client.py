"""profile_service.client.ProfileClient against a real server: every RPC, its typed errors,
the token provider, and gRPC's retry on UNAVAILABLE across a database outage."""

import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from profile_service.auth import tokens
from profile_service.client import (
    Aborted,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProfileClient,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from profile_service.transport import server
from profile_service.v1 import profile_service_pb2 as pb
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import SECRET, serving_through_proxy, wait_for
from tests.e2e.probes import NOT_SERVING, health, scrape
from tests.e2e.tcp_proxy import TcpProxy


def _user_token(sub: str) -> str:
    return tokens.mint(SECRET, role="authenticated", sub=sub)


def _service_token() -> str:
    return tokens.mint(SECRET, role="service_role")


@pytest.fixture
def target(running_server: server.RunningServer, admin: object) -> str:
    return f"127.0.0.1:{running_server.port}"


def test_every_rpc_through_the_client(target: str) -> None:
    owner = str(uuid.uuid4())
    with ProfileClient(target, token=_user_token(owner)) as me:
        created = me.upsert(pb.Profile(age=30, primary_goal="strength"))
        assert (created.owner_id, created.age, created.primary_goal) == (owner, 30, "strength")
        updated = me.upsert(pb.Profile(age=31, primary_goal="ignored"), update_mask=["age"])
        assert (updated.age, updated.primary_goal) == (31, "strength")
        assert me.get().etag == updated.etag
        deleted = me.soft_delete(etag=updated.etag)
        assert deleted.HasField("deleted_at") and deleted.HasField("purge_time")
        with pytest.raises(NotFound):
            me.get()
        restored = me.undelete()
        assert (restored.age, restored.HasField("deleted_at")) == (31, False)
    with ProfileClient(target, token=_service_token()) as service:
        assert [p.owner_id for p in service.batch_get_profiles([owner, owner])] == [owner, owner]
        assert service.get(owner).age == 31
        assert service.purge(dry_run=True) == 0


def test_errors_are_typed_with_status_reason_details_and_request_id(target: str) -> None:
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())
    with ProfileClient(target, token=_user_token(owner)) as me:
        with pytest.raises(InvalidArgument) as invalid:
            me.upsert(pb.Profile(age=3, height_cm=9000))
        assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert invalid.value.reason == "INVALID_FIELDS"
        assert {v.field for v in invalid.value.violations} == {"profile.age", "profile.height_cm"}
        assert invalid.value.request_id

        current = me.upsert(pb.Profile(age=30))
        with pytest.raises(Aborted) as aborted:
            me.upsert(pb.Profile(age=40, etag='"stale"'))
        assert aborted.value.reason == "ETAG_MISMATCH"
        assert me.get().etag == current.etag  # nothing written

        with pytest.raises(AlreadyExists):
            me.undelete()
        with pytest.raises(PermissionDenied):
            me.get(other)
    with ProfileClient(target, token=_service_token()) as service, pytest.raises(NotFound) as nf:
        service.batch_get_profiles([owner, other])
    assert nf.value.missing == [other]
    with ProfileClient(target, token="not-a-jwt") as stranger, pytest.raises(Unauthenticated):
        stranger.get()


def test_a_token_provider_is_asked_before_every_call(target: str) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    asked: list[str] = []

    def token() -> str:  # as a session that refreshes its access token would
        sub = first if not asked else second
        asked.append(sub)
        return _user_token(sub)

    with ProfileClient(target, token=token) as client:
        assert client.upsert(pb.Profile(age=30)).owner_id == first
        assert client.upsert(pb.Profile(age=40)).owner_id == second
    assert asked == [first, second]


def test_the_default_deadline_and_a_per_call_one_apply(target: str) -> None:
    with ProfileClient(target, token=_user_token(str(uuid.uuid4())), timeout=0.000_001) as c:
        with pytest.raises(ServiceError) as info:
            c.get()
        assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        with pytest.raises(NotFound):  # the call's own timeout wins over the client's
            c.get(timeout=5)


@pytest.fixture
def proxied(test_db: ThrowawayDatabase) -> Iterator[tuple[TcpProxy, server.RunningServer]]:
    with serving_through_proxy(test_db.service_url, HEALTH_CHECK_INTERVAL_SECONDS="0.1") as (
        proxy,
        running,
        _,
    ):
        yield proxy, running


def _answered(running: server.RunningServer, code: str) -> float:
    sample = ("profile_requests_total", (("code", code), ("method", "Get")))
    return scrape(running.metrics_port).get(sample, 0.0)


def test_unavailable_is_retried_until_the_database_is_back(
    proxied: tuple[TcpProxy, server.RunningServer],
) -> None:
    proxy, running = proxied
    owner = str(uuid.uuid4())
    target = f"127.0.0.1:{running.port}"
    with ProfileClient(target, token=_user_token(owner)) as client:
        client.upsert(pb.Profile(age=30))
        proxy.cut()
        with grpc.insecure_channel(target) as channel:
            assert wait_for(lambda: health(channel) == NOT_SERVING)
        unavailable_before = _answered(running, "UNAVAILABLE")

        def restore_after_the_first_refusal() -> None:
            wait_for(lambda: _answered(running, "UNAVAILABLE") > unavailable_before)
            proxy.restore()

        restorer = threading.Thread(target=restore_after_the_first_refusal)
        restorer.start()
        started = time.monotonic()
        assert client.get(timeout=10).age == 30  # one call for the caller
        restorer.join()
    assert _answered(running, "UNAVAILABLE") > unavailable_before  # the server refused first
    assert time.monotonic() - started < 5


def test_without_the_database_every_retry_is_spent_then_unavailable(
    proxied: tuple[TcpProxy, server.RunningServer],
) -> None:
    proxy, running = proxied
    target = f"127.0.0.1:{running.port}"
    with ProfileClient(target, token=_user_token(str(uuid.uuid4()))) as client:
        proxy.cut()
        with grpc.insecure_channel(target) as channel:
            assert wait_for(lambda: health(channel) == NOT_SERVING)
        before = _answered(running, "UNAVAILABLE")
        with pytest.raises(Unavailable) as info:
            client.get(timeout=10)
    assert info.value.reason == "DATABASE_UNREACHABLE"
    assert _answered(running, "UNAVAILABLE") - before >= 2  # attempts, one call
