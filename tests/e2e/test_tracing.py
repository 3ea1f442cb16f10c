"""OpenTelemetry tracing on a real server: the caller's trace continued, a database span under
each call's span, statuses, nothing personal in a span; off by default, and then not loaded."""

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from devtools.otlp_sink import Sink
from profile_service.auth import tokens
from profile_service.runtime.tracing import FLUSH_SECONDS
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import SECRET, rpc_error, server_env, serving, wait_for
from tests.e2e.probes import SERVING, free_port, health

CLI = str(Path(sys.executable).parent / "profile-service")
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def traced(
    test_db: ThrowawayDatabase,
) -> Iterator[tuple[pb_grpc.ProfileServiceStub, InMemorySpanExporter]]:
    """A server whose spans end up in an in-memory exporter (no OTEL_* set: the processor
    alone turns tracing on)."""
    exporter = InMemorySpanExporter()
    with serving(
        server_env(test_db.service_url), span_processors=[SimpleSpanProcessor(exporter)]
    ) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel), exporter


def _by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def _finished(exporter: InMemorySpanExporter, count: int) -> tuple[ReadableSpan, ...]:
    """The finished spans once there are `count`: grpc answers an aborted call before its
    handler's span ends, so the caller may see the error first."""
    wait_for(lambda: len(exporter.get_finished_spans()) >= count, timeout=5)
    return exporter.get_finished_spans()


def test_a_call_continues_the_callers_trace_with_a_database_span_under_it(traced) -> None:
    stub, exporter = traced
    owner = str(uuid.uuid4())
    md = (
        ("authorization", f"Bearer {tokens.mint(SECRET, role='authenticated', sub=owner)}"),
        ("traceparent", TRACEPARENT),
        ("x-request-id", "trace-test-1"),
    )
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=34)), metadata=md, timeout=5)

    spans = exporter.get_finished_spans()
    (call,) = _by_name(spans, "profile.v1.ProfileService/Upsert")
    (database,) = _by_name(spans, "db profile_api.upsert_profile")
    assert call.kind is SpanKind.SERVER
    assert call.context is not None and call.parent is not None
    assert format(call.context.trace_id, "032x") == TRACE_ID
    assert format(call.parent.span_id, "016x") == PARENT_ID
    assert call.parent.is_remote
    assert dict(call.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "profile.v1.ProfileService",
        "rpc.method": "Upsert",
        "rpc.grpc.status_code": 0,
        "rpc.response.status_code": "OK",
        "profile_service.request_id": "trace-test-1",
    }
    assert call.status.status_code is StatusCode.UNSET
    assert database.kind is SpanKind.CLIENT
    assert database.context is not None and database.parent is not None
    assert database.context.trace_id == call.context.trace_id
    assert database.parent.span_id == call.context.span_id
    assert (database.attributes or {})["db.system"] == "postgresql"
    assert (database.attributes or {})["db.operation.name"] == "profile_api.upsert_profile"
    assert call.resource.attributes["service.name"] == "profile-service"


def test_a_call_without_a_traceparent_starts_a_trace(traced, new_user) -> None:
    stub, exporter = traced
    _, md = new_user()
    rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
    (call,) = _by_name(_finished(exporter, 2), "profile.v1.ProfileService/Get")
    assert call.parent is None
    assert len(call.attributes["profile_service.request_id"]) == 32  # generated


def test_a_failed_call_carries_its_status_and_server_faults_are_errors(traced, new_user) -> None:
    stub, exporter = traced
    _, md = new_user()
    assert (
        rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5)).code()
        is grpc.StatusCode.NOT_FOUND
    )
    assert (
        rpc_error(lambda: stub.Get(pb.GetRequest(), timeout=5)).code()
        is grpc.StatusCode.UNAUTHENTICATED
    )
    spans = _finished(exporter, 3)
    get, unauthenticated = _by_name(spans, "profile.v1.ProfileService/Get")
    assert get.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert get.attributes["rpc.response.status_code"] == "NOT_FOUND"
    # The caller's mistakes are not the server's faults (OpenTelemetry's gRPC conventions).
    assert get.status.status_code is StatusCode.UNSET
    assert unauthenticated.attributes["rpc.response.status_code"] == "UNAUTHENTICATED"
    # A refused token never reaches the database: one database span, the Get's.
    assert len(_by_name(spans, "db profile_api.get_profile")) == 1


def test_a_database_refusal_marks_the_database_span_failed_without_its_text(traced) -> None:
    stub, exporter = traced
    owner = str(uuid.uuid4())
    md = (("authorization", f"Bearer {tokens.mint(SECRET, role='authenticated', sub=owner)}"),)
    stub.Upsert(pb.UpsertRequest(profile=pb.Profile(age=34)), metadata=md, timeout=5)
    stale = pb.Profile(age=35, etag='"not-the-etag"')
    error = rpc_error(lambda: stub.Upsert(pb.UpsertRequest(profile=stale), metadata=md, timeout=5))
    assert error.code() is grpc.StatusCode.ABORTED
    _, refused = _by_name(_finished(exporter, 4), "db profile_api.upsert_profile")
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.status.description == "ETAG_MISMATCH"
    assert refused.attributes["db.response.status_code"] == "PF412"
    assert not refused.events  # no exception recorded: its message could echo input


def test_no_span_carries_a_token_an_owner_id_or_a_profile_field(traced) -> None:
    stub, exporter = traced
    owner = str(uuid.uuid4())
    token = tokens.mint(SECRET, role="authenticated", sub=owner)
    md = (("authorization", f"Bearer {token}"), ("traceparent", TRACEPARENT))
    secrets = {
        "token": token,
        "owner": owner,
        "goal": "run-a-marathon-goal-7f3a",
        "limitation": "left-knee-limitation-9c2e",
        "equipment": "kettlebell-item-51d0",
    }
    profile = pb.Profile(
        age=34,
        primary_goal=secrets["goal"],
        limitations=secrets["limitation"],
        available_equipment=[secrets["equipment"]],
    )
    stub.Upsert(pb.UpsertRequest(profile=profile), metadata=md, timeout=5)
    stub.Get(pb.GetRequest(owner_id=owner), metadata=md, timeout=5)
    rpc_error(lambda: stub.Get(pb.GetRequest(owner_id=str(uuid.uuid4())), metadata=md, timeout=5))
    bad = pb.Profile(age=7, primary_goal=secrets["goal"])  # INVALID_ARGUMENT echoes input
    rpc_error(lambda: stub.Upsert(pb.UpsertRequest(profile=bad), metadata=md, timeout=5))

    # Upsert and Get with a database span each; another's profile (PERMISSION_DENIED) and the
    # invalid Upsert refused before the database.
    spans = _finished(exporter, 6)
    assert len(spans) == 6
    texts = [str(s.name) for s in spans] + [str(s.status.description) for s in spans]
    for span in spans:
        texts += [str(v) for v in (span.attributes or {}).values()]
        for event in span.events:
            texts += [event.name, *(str(v) for v in (event.attributes or {}).values())]
    secrets.update({f"token part {i}": part for i, part in enumerate(token.split("."))})
    for name, value in secrets.items():
        leaked = [text for text in texts if value in text]
        assert not leaked, f"{name} in a span: {leaked}"


def test_tracing_off_loads_no_opentelemetry(test_db: ThrowawayDatabase) -> None:
    """A server started and called with no OTEL_* set: OpenTelemetry never imported."""
    script = f"""
import json, sys, uuid, grpc
from profile_service.transport import server
from profile_service.auth import tokens
from profile_service.runtime.config import Settings
from profile_service.v1 import profile_service_pb2 as pb, profile_service_pb2_grpc as pb_grpc
running = server.start(Settings.from_env(json.loads(sys.argv[1])), host="127.0.0.1")
with grpc.insecure_channel(f"127.0.0.1:{{running.port}}") as channel:
    md = (("authorization", "Bearer " + tokens.mint({SECRET!r}, role="authenticated",
                                                    sub=str(uuid.uuid4()))),)
    try:
        pb_grpc.ProfileServiceStub(channel).Get(pb.GetRequest(), metadata=md, timeout=5)
    except grpc.RpcError as error:
        assert error.code() is grpc.StatusCode.NOT_FOUND, error
running.stop(1)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(server_env(test_db.service_url))],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def _exporting_env(
    test_db: ThrowawayDatabase, port: int, collector_port: int, **overrides: str
) -> dict[str, str]:
    """A `serve` process's environment, exporting spans to 127.0.0.1:`collector_port`, every
    span held for the flush at stop."""
    return {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")},
        **server_env(
            test_db.service_url,
            GRPC_PORT=str(port),
            METRICS_PORT=str(free_port()),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}",
            OTEL_EXPORTER_OTLP_INSECURE="true",
            # Long enough that only the flush at stop can deliver the spans.
            OTEL_BSP_SCHEDULE_DELAY="60000",
            **overrides,
        ),
    }


def test_each_worker_exports_over_otlp_and_flushes_on_stop(test_db: ThrowawayDatabase) -> None:
    """`serve --workers 2` with OTEL_EXPORTER_OTLP_ENDPOINT: the workers' spans reach an OTLP
    receiver, the last ones when SIGTERM stops the server."""
    sink = Sink(keep=True)
    receiver, sink_port = sink.serve()
    port = free_port()
    env = _exporting_env(test_db, port, sink_port, WORKERS="2")
    process = subprocess.Popen(
        [CLI, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    calls = 6
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
        for _ in range(calls):  # a channel each: the kernel spreads connections over workers
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                token = tokens.mint(SECRET, role="authenticated", sub=str(uuid.uuid4()))
                md = (("authorization", f"Bearer {token}"), ("traceparent", TRACEPARENT))
                rpc_error(
                    lambda channel=channel, md=md: pb_grpc.ProfileServiceStub(channel).Get(
                        pb.GetRequest(), metadata=md, timeout=5
                    )
                )
        assert sink.spans == 0  # still queued in the workers' batch processors
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
        receiver.stop(0)
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    names = [s.name for s in sink.kept]
    assert names.count("profile.v1.ProfileService/Get") == calls
    assert names.count("db profile_api.get_profile") == calls
    assert {s.trace_id.hex() for s in sink.kept} == {TRACE_ID}
    assert sink.services == {"profile-service"}


def test_a_collector_that_never_answers_does_not_hold_the_stop_past_its_bound(
    test_db: ThrowawayDatabase,
) -> None:
    """A collector that accepts connections and then says nothing: SIGTERM still exits within
    the drain's grace plus FLUSH_SECONDS, inside a pod's termination grace (it took 32 s)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel accepts; nobody ever reads or answers
    port = free_port()
    env = _exporting_env(test_db, port, silent.getsockname()[1], SHUTDOWN_GRACE_SECONDS="1")
    process = subprocess.Popen(
        [CLI, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert wait_for(lambda: health(channel) == SERVING, timeout=20)
            token = tokens.mint(SECRET, role="authenticated", sub=str(uuid.uuid4()))
            md = (("authorization", f"Bearer {token}"),)
            stub = pb_grpc.ProfileServiceStub(channel)
            for _ in range(3):
                rpc_error(lambda: stub.Get(pb.GetRequest(), metadata=md, timeout=5))
        signalled = time.monotonic()
        process.terminate()
        _, stderr = process.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        silent.close()
    print(f"stopped in {took:.1f} s")
    assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    # The drain (1 s here) plus the flush's bound, with room for a loaded machine; not 30 s.
    assert took < 1 + FLUSH_SECONDS + 3
    assert b"spans not exported" in stderr
