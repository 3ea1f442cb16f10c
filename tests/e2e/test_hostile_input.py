"""What a hostile or broken client sends gets the right status, never a leak (issue "Edges").

The grpc library refuses to send most of this, so these tests speak HTTP/2 themselves
(tests/e2e/raw_h2.py).
"""

import logging
import time
import uuid

import grpc
import pytest

from profile_service.runtime.logs import FAILED_CALL_LINES
from profile_service.transport import core_calls
from profile_service.v1 import profile_service_pb2 as pb
from tests.e2e.conftest import user, wait_for
from tests.e2e.probes import scrape
from tests.e2e.raw_h2 import call, frame

GET = "/profile.v1.ProfileService/Get"
UPSERT = "/profile.v1.ProfileService/Upsert"


@pytest.mark.parametrize("request_id", ["é", "a\x01b", "tab\there", "x" * 129, ""])
def test_an_unusable_request_id_is_replaced_not_turned_into_an_error(
    running_server: object, admin: object, request_id: str
) -> None:
    port = running_server.port  # type: ignore[attr-defined]
    sub = uuid.uuid4()
    token = dict(user(sub))["authorization"].encode()
    request = pb.UpsertRequest(profile=pb.Profile(age=33)).SerializeToString()
    answer = call(
        port,
        UPSERT,
        frame(request),
        [(b"authorization", token), (b"x-request-id", request_id.encode())],
    )
    # The write committed, and the caller is told so: not INTERNAL "Invalid metadata".
    assert answer.status == grpc.StatusCode.OK.value[0], answer.message
    echoed = answer.metadata[b"x-request-id"]
    assert echoed != request_id.encode() and len(echoed) == 32  # a fresh id


def test_a_printable_request_id_comes_back(running_server: object) -> None:
    port = running_server.port  # type: ignore[attr-defined]
    request_id = b"caller-7f3a:retry=2 (batch #9)"
    answer = call(port, GET, frame(b""), [(b"x-request-id", request_id)])
    assert answer.metadata[b"x-request-id"] == request_id


def test_a_body_that_is_not_protobuf_is_invalid_argument_counted_and_quiet(
    running_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    port = running_server.port  # type: ignore[attr-defined]
    metrics_port = running_server.metrics_port  # type: ignore[attr-defined]
    key = ("profile_requests_total", (("code", "INVALID_ARGUMENT"), ("method", "Get")))
    before = scrape(metrics_port).get(key, 0.0)
    caplog.set_level(logging.INFO)
    answer = call(port, GET, frame(b"\xff\xff\xff\xff"), [(b"x-request-id", b"garbage-1")])
    assert answer.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "not a valid profile.v1.GetRequest" in answer.message
    assert scrape(metrics_port).get(key, 0.0) == before + 1
    assert wait_for(
        lambda: any(getattr(r, "request_id", "") == "garbage-1" for r in caplog.records)
    )
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert "Traceback" not in logged and "DecodeError" not in logged


def _bad_byte_at(where: str, token: bytes) -> bytes:
    """`token` ("Bearer <jwt>") with a byte that is not UTF-8 put `where`."""
    scheme, jwt_ = token.split(b" ", 1)
    header, payload, signature = jwt_.split(b".")
    bad = b"\xff"
    return {
        "before the scheme": bad + token,
        "in the scheme": scheme[:3] + bad + scheme[3:] + b" " + jwt_,
        "between scheme and token": scheme + b" " + bad + jwt_,
        "in the header": scheme
        + b" "
        + header[:1]
        + bad
        + header[1:]
        + b"."
        + payload
        + b"."
        + signature,
        "in the payload": scheme
        + b" "
        + header
        + b"."
        + payload[:9]
        + bad
        + payload[9:]
        + b"."
        + signature,
        "in the signature": token[:-6] + bad + token[-6:],
        "at the end": token + bad,
    }[where]


@pytest.mark.parametrize(
    "where",
    [
        "before the scheme",
        "in the scheme",
        "between scheme and token",
        "in the header",
        "in the payload",
        "in the signature",
        "at the end",
    ],
)
def test_a_token_with_a_stray_byte_is_unauthenticated_and_never_logged(
    running_server: object,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    where: str,
) -> None:
    port = running_server.port  # type: ignore[attr-defined]
    for name in ("profile_service", "grpc"):  # the server's loggers (the test client's own log)
        caplog.set_level(logging.DEBUG, logger=name)
    token = dict(user(uuid.uuid4()))["authorization"].encode()  # a valid "Bearer <jwt>"
    answer = call(port, GET, frame(b""), [(b"authorization", _bad_byte_at(where, token))])
    assert answer.status == grpc.StatusCode.UNAUTHENTICATED.value[0]
    time.sleep(0.2)  # gRPC's C core writes its log lines on threads of its own
    out, err = capfd.readouterr()
    logged = out + err + "\n".join(r.getMessage() for r in caplog.records)
    jwt_ = token.split(b" ", 1)[1].decode()
    # No piece of the token long enough to help rebuild it, in any form the log could hold it.
    pieces = {jwt_[i : i + 12] for i in range(len(jwt_) - 12)}
    assert not [piece for piece in pieces if piece in logged]


def test_header_values_that_are_not_utf8_cannot_flood_the_log(
    running_server: object, caplog: pytest.LogCaptureFixture
) -> None:
    # gRPC logs an ERROR, with a traceback, each time such a call's metadata is read: three
    # times a call. Its lines go through the failed-call budget (logs.FAILED_CALL_LINES).
    port = running_server.port  # type: ignore[attr-defined]
    caplog.set_level(logging.DEBUG, logger="grpc")
    calls = 300
    started = time.monotonic()
    for _ in range(calls):
        call(port, GET, frame(b""), [(b"x-foo", b"v\xff")])
    elapsed = time.monotonic() - started
    lines = [
        r for r in caplog.records if r.name.startswith("grpc") and r.levelno >= logging.WARNING
    ]
    budget = FAILED_CALL_LINES
    assert len(lines) <= budget.burst + budget.per_second * elapsed + 1 < 3 * calls
    assert all(r.exc_info is None for r in lines)  # one line each, no traceback
    # The budget is the process's: let it refill, or the next tests' failed calls go unlogged.
    time.sleep(budget.burst / budget.per_second)


def test_calls_grpc_itself_refuses_are_counted(running_server: object) -> None:
    # An upper-case header name is refused by gRPC's transport before any handler: the API's
    # metrics never see the call, channelz does (core_calls.py).
    port = running_server.port  # type: ignore[attr-defined]
    metrics_port = running_server.metrics_port  # type: ignore[attr-defined]
    failed = ("profile_grpc_calls_failed_total", ())
    internal = ("profile_requests_total", (("code", "INTERNAL"), ("method", "Get")))
    before = scrape(metrics_port)
    for _ in range(5):
        answer = call(port, GET, frame(b""), [(b"X-Upper", b"v")])
        assert answer.status == grpc.StatusCode.INTERNAL.value[0]
        assert "Illegal header key" in answer.message
    assert wait_for(
        lambda: scrape(metrics_port)[failed] >= before[failed] + 5,
        timeout=core_calls.INTERVAL_SECONDS + 5,
    )
    after = scrape(metrics_port)
    assert after.get(internal, 0.0) == before.get(internal, 0.0)
    started = ("profile_grpc_calls_started_total", ())
    assert after[started] >= before[started] + 5
