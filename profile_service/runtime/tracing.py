"""OpenTelemetry tracing: a server span per API call, continuing the caller's trace, and a child
span per database call. Imported only when tracing is on (server.py), so that a server without
it, or without the `tracing` extra, never loads OpenTelemetry.

What a span carries is chosen, not collected: the RPC's name and status, the request id, the
`profile_api` function called and the SQLSTATE of a refusal. Never the token, an owner id, a
profile field, SQL parameters or an exception's text (which can echo input); so no exception is
recorded, only its class name. The OTEL_* variables not read by config.py (sampler, batch
sizes, OTLP headers, TLS and timeout, resource attributes) are the SDK's own to read.
"""

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from profile_service.storage.db import Statement
from profile_service.transport.access_log import REQUEST_ID_KEY
from profile_service.transport.unary_interceptor import (
    Behavior,
    UnaryInterceptor,
    run_reporting_status,
)

DEFAULT_SERVICE_NAME = "profile-service"
# How long a stop waits for the last spans to be exported, after the drain: with the drain's
# SHUTDOWN_GRACE_SECONDS, well inside a pod's termination grace (docs/operations.md §11).
FLUSH_SECONDS = 3.0
_INSTRUMENTATION = "profile_service"
_LOGGER = logging.getLogger(__name__)
# The statuses that mean the server failed (OpenTelemetry's gRPC conventions for a server
# span); the others are the caller's doing and leave the span's status unset.
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Metadata = Sequence[tuple[str, str | bytes]]
# A context manager around one database call of a statement (store.py holds it opaquely).
DatabaseSpan = Callable[[Statement], AbstractContextManager[object]]


@dataclass(frozen=True)
class Tracing:
    """One process's tracer provider, and what the request path needs from it."""

    provider: TracerProvider
    tracer: trace.Tracer

    def interceptor(self) -> "TracingInterceptor":
        """The interceptor that opens each API call's server span."""
        return TracingInterceptor(self.tracer)

    def database_span(self) -> DatabaseSpan:
        """A function opening the span of one database call (for store.ProfileStore)."""
        tracer = self.tracer

        @contextmanager
        def span(statement: Statement) -> Iterator[object]:
            with tracer.start_as_current_span(
                f"db {statement.function}",
                kind=SpanKind.CLIENT,
                attributes={
                    # Both generations of the database conventions: backends read either.
                    "db.system": "postgresql",
                    "db.system.name": "postgresql",
                    "db.operation.name": statement.function,
                    "db.stored_procedure.name": statement.function,
                },
                record_exception=False,
                set_status_on_exception=False,
            ) as current:
                try:
                    yield current
                except BaseException as exc:
                    _database_failure(current, exc)
                    raise

        return span

    def shutdown(self) -> None:
        """Export the spans still queued, then stop; give up on them after FLUSH_SECONDS."""
        # The SDK bounds each export (OTEL_EXPORTER_OTLP_TIMEOUT) but retries and exports
        # batch after batch: a collector that accepts and never answers held a stop for 32 s,
        # past a pod's grace. So the flush runs in a thread we stop waiting for; the process
        # exits without it (daemon).
        flush = threading.Thread(target=self.provider.shutdown, name="otel-flush", daemon=True)
        flush.start()
        flush.join(FLUSH_SECONDS)
        if flush.is_alive():
            _LOGGER.warning(
                "spans not exported within %.0f s of the stop: the collector does not answer; "
                "they are dropped",
                FLUSH_SECONDS,
            )


def start(exporters: Sequence[str], processors: Sequence[SpanProcessor] = ()) -> Tracing:
    """This process's tracer provider: a batch processor per exporter ("otlp": OTLP over
    gRPC; "console": stdout, for debugging), plus `processors` (tests hand an in-memory
    exporter's). Each server process calls this once it runs (after a worker's spawn): the
    batch processor's thread and the exporter's channel belong to one process."""
    provider = TracerProvider(resource=_resource())
    for name in exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    for processor in processors:
        provider.add_span_processor(processor)
    # The provider is the server's own, not the global one: the global can be set only once
    # per process, and tests run several servers in one.
    return Tracing(provider, provider.get_tracer(_INSTRUMENTATION))


def _resource() -> Resource:
    """The SDK's resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES), named
    `profile-service` unless those name it."""
    detected = Resource.create()
    if str(detected.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        return detected.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return detected


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    # The OTLP gRPC exporter reads its endpoint, headers, TLS, compression and timeout from
    # the OTEL_EXPORTER_OTLP_(TRACES_)* variables.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _database_failure(span: trace.Span, exc: BaseException) -> None:
    """Mark `span` failed with what names the failure and nothing the caller sent: the
    SQLSTATE, and store.py's reason (DATABASE_TIMEOUT, ETAG_MISMATCH…) or the class name."""
    for cause in (exc, exc.__cause__):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str):
            span.set_attribute("db.response.status_code", sqlstate)
            break
    reason = getattr(exc, "reason", None)
    span.set_status(
        Status(StatusCode.ERROR, reason if isinstance(reason, str) else type(exc).__name__)
    )


class _MetadataGetter(Getter[Metadata]):
    """Reads propagation headers (traceparent, tracestate, …) from gRPC metadata."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        found = [v for k, v in carrier if k == key and isinstance(v, str)]
        return found or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


def parent_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> Context:
    """The caller's trace context from its metadata (W3C `traceparent`/`tracestate` unless
    OTEL_PROPAGATORS says otherwise); an empty context starts a new trace."""
    return propagate.extract(tuple(metadata or ()), getter=_GETTER)


class TracingInterceptor(UnaryInterceptor):
    """A SERVER span around each API call.

    Placed just inside the access log, which has put the request id in the trailing metadata.
    Health and reflection are not wrapped (unary_interceptor.py): probes every second would
    fill the traces and never carry a caller's context.
    """

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        """`behavior` inside a span named after `method` ("/package.Service/Method")."""
        name = method.lstrip("/")
        service, _, short_name = name.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": short_name}
        tracer = self._tracer

        async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with tracer.start_as_current_span(
                name,
                context=parent_context(context.invocation_metadata()),
                kind=SpanKind.SERVER,
                attributes=attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                for key, value in context.trailing_metadata() or ():
                    if key == REQUEST_ID_KEY:
                        span.set_attribute("profile_service.request_id", value)
                return await run_reporting_status(
                    behavior, request, context, lambda code: _end_call(span, code)
                )

        return handle


def _end_call(span: trace.Span, code: grpc.StatusCode) -> None:
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    # The newer conventions' name for it, as text.
    span.set_attribute("rpc.response.status_code", code.name)
    if code in _SERVER_FAULTS:
        span.set_status(Status(StatusCode.ERROR, code.name))
