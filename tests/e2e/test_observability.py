"""Metrics move with the calls; logs carry no secrets; keys can rotate without refusing callers."""

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc
import psycopg
import pytest

from profile_service.auth import tokens
from profile_service.runtime import logs
from profile_service.transport import server
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import bearer, rpc_error, server_env, service, serving, user, wait_for
from tests.e2e.probes import scrape


def test_metrics_count_calls_latency_pool_and_purges(
    running_server: server.RunningServer, stub, admin: psycopg.Connection
) -> None:
    assert running_server.metrics_port
    before = scrape(running_server.metrics_port)
    md = user(uuid.uuid4())
    for _ in range(3):
        rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=30)), metadata=md, timeout=5)
    admin.execute(
        "INSERT INTO profile.profiles (owner_id, deleted_at) "
        "VALUES (%s, now() - interval '90 days')",
        (uuid.uuid4(),),
    )
    stub.Purge(pb.PurgeRequest(), metadata=service(), timeout=5)
    after = scrape(running_server.metrics_port)

    def moved(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert moved("profile_requests_total", method="Get", code="NOT_FOUND") == 3
    assert moved("profile_requests_total", method="Upsert", code="OK") == 1
    assert moved("profile_request_latency_seconds_count", method="Get") == 3
    assert moved("profile_purged_total") == 1
    # The pool's gauges are copied at each health probe (every 0.2 s here).
    assert wait_for(lambda: scrape(running_server.metrics_port)[("profile_db_pool_size", ())] >= 1)


def _call_logged(
    stub: pb_grpc.ProfileServiceStub,
    caplog: pytest.LogCaptureFixture,
    request: pb.UpsertRequest,
    metadata: tuple[tuple[str, str], ...],
) -> tuple[dict[str, str], list[logging.LogRecord]]:
    request_id = uuid.uuid4().hex
    with caplog.at_level(logging.INFO, logger="profile_service.access"):
        try:
            _, call = stub.Upsert.with_call(
                request, metadata=(*metadata, ("x-request-id", request_id)), timeout=5
            )
            trailers = dict(call.trailing_metadata())
        except grpc.RpcError as exc:
            trailers = dict(exc.trailing_metadata())  # type: ignore[attr-defined]
            # A failed call's status leaves as the handler aborts; its log line follows.
            wait_for(
                lambda: any(getattr(r, "request_id", None) == request_id for r in caplog.records)
            )
    records = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    assert trailers["x-request-id"] == request_id
    return trailers, records


def test_failed_calls_are_logged_with_request_id_and_no_secrets(
    stub, caplog: pytest.LogCaptureFixture
) -> None:
    sub = str(uuid.uuid4())
    md = user(sub)
    token = md[0][1].removeprefix("Bearer ")
    request = pb.UpsertRequest(profile=pb.Profile(age=5, limitations="asthma"))
    _, records = _call_logged(stub, caplog, request, md)
    assert len(records) == 1
    line = records[0]
    assert (line.method, line.code, line.role) == (
        "/profile.v1.ProfileService/Upsert",
        "INVALID_ARGUMENT",
        "authenticated",
    )
    assert isinstance(line.latency_ms, float)
    everything = str(line.__dict__)
    for secret in (token, sub, "asthma"):
        assert secret not in everything


def test_successful_calls_are_logged_only_with_access_log_all(
    stub, test_db: ThrowawayDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    request = pb.UpsertRequest(profile=pb.Profile(age=30, limitations="asthma"))
    _, records = _call_logged(stub, caplog, request, user(uuid.uuid4()))
    assert records == []  # the default: metrics count them, the log keeps failures
    with serving(server_env(test_db.service_url, ACCESS_LOG="all")) as (_, channel):
        all_stub = pb_grpc.ProfileServiceStub(channel)
        _, records = _call_logged(all_stub, caplog, request, user(uuid.uuid4()))
    assert [r.code for r in records] == ["OK"]
    assert "asthma" not in str(records[0].__dict__)


@pytest.fixture(scope="module")
def rotating_stub(test_db: ThrowawayDatabase) -> Iterator[pb_grpc.ProfileServiceStub]:
    env = server_env(
        test_db.service_url,
        JWT_SECRET="the-new-secret-after-the-rotation-0001",
        JWT_SECRET_PREVIOUS="the-old-secret-before-the-rotation-01",
    )
    with serving(env) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel)


@pytest.mark.parametrize(
    ("secret", "code"),
    [
        ("the-new-secret-after-the-rotation-0001", grpc.StatusCode.NOT_FOUND),
        ("the-old-secret-before-the-rotation-01", grpc.StatusCode.NOT_FOUND),
        ("a-third-secret-nobody-configured-00001", grpc.StatusCode.UNAUTHENTICATED),
    ],
)
def test_current_and_previous_keys_are_both_accepted(
    rotating_stub: pb_grpc.ProfileServiceStub, secret: str, code: grpc.StatusCode
) -> None:
    token = tokens.mint(secret, role="authenticated", sub=str(uuid.uuid4()))
    error = rpc_error(lambda: rotating_stub.Get(pb.GetRequest(), metadata=bearer(token), timeout=5))
    assert error.code() == code


def test_a_flood_of_failed_calls_cannot_flood_the_log(
    stub,
    running_server: server.RunningServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.INFO, logger="profile_service.access")
    key = ("profile_requests_total", (("code", "UNAUTHENTICATED"), ("method", "Get")))
    counted = scrape(running_server.metrics_port).get(key, 0.0)  # type: ignore[arg-type]
    # A budget of its own, full: whatever the other tests' failures left of the shared one.
    shared = logs.FAILED_CALL_LINES
    budget = logs.LineBudget(per_second=shared.per_second, burst=shared.burst)
    monkeypatch.setattr(logs, "FAILED_CALL_LINES", budget)
    before = len(caplog.records)
    # 400 failed calls (no token) as fast as 8 threads can make them: well over the 50 lines a
    # second that the failed-call log allows after its burst of 100.
    with futures.ThreadPoolExecutor(max_workers=8) as pool:
        errors = list(pool.map(lambda _: rpc_error(lambda: stub.Get(pb.GetRequest())), range(400)))
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAUTHENTICATED}
    time.sleep(2 / budget.per_second)  # two lines' worth of refill
    rpc_error(lambda: stub.Get(pb.GetRequest()))  # after a pause: logged, with what was dropped

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records[before:] if getattr(r, "code", "") == "UNAUTHENTICATED"]

    # Every call is either a line or counted in the next line's dropped_before.
    assert wait_for(lambda: sum(1 + int(getattr(r, "dropped_before", 0)) for r in lines()) == 401)
    assert len(lines()) < 300
    assert any(int(getattr(r, "dropped_before", 0)) > 0 for r in lines())
    # The metrics count every call all the same.
    after = scrape(running_server.metrics_port).get(key, 0.0)  # type: ignore[arg-type]
    assert after == counted + 401
