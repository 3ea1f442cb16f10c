"""Assembly: pool, interceptors, API, health and reflection on a grpc.aio server, and its
orderly stop (lifecycle.py decides when).

The server is asyncio's: a call waiting for its request, or for the database, holds a
coroutine, not a thread, so neither stalled clients nor a frozen database can starve the other
callers or the health checks (docs/decisions/0001-asyncio-server-and-call-budgets.md). The
event loop runs in a thread of its own; the main thread only waits for a stop signal.
"""

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar
from wsgiref.simple_server import WSGIServer

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from psycopg_pool import AsyncConnectionPool

from profile_service.auth.jwks import JwksKeySet
from profile_service.auth.verify import AuthInterceptor, TokenVerifier
from profile_service.domain import deadlines
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import MAX_REQUEST_BYTES
from profile_service.runtime import logs, metrics
from profile_service.runtime.config import Settings
from profile_service.runtime.memory import HeapTrimmer
from profile_service.storage import repository, startup_check
from profile_service.storage.field_cipher import FieldCipher
from profile_service.storage.health import SERVICE_NAME, DatabaseHealthMonitor
from profile_service.storage.liveness import DatabaseLiveness
from profile_service.storage.store import ProfileStore
from profile_service.transport import core_calls, reflection, tls
from profile_service.transport.access_log import AccessLogInterceptor
from profile_service.transport.admission import SETTLE_SECONDS, Admission
from profile_service.transport.internal_errors import InternalErrorInterceptor
from profile_service.transport.malformed import RejectMalformed, parse_or_mark
from profile_service.transport.servicer import ProfileServicer
from profile_service.transport.unary_interceptor import UnaryInterceptor, register
from profile_service.transport.unfinished import Bounded, UnfinishedRequests
from profile_service.v1 import profile_service_pb2 as pb

if TYPE_CHECKING:  # OpenTelemetry is imported only when tracing is on
    from opentelemetry.sdk.trace import SpanProcessor

    from profile_service.runtime.tracing import Tracing

_LOGGER = logging.getLogger(__name__)
T = TypeVar("T")
# The shortest keepalive ping interval a client may use (README, docs/operations.md).
CLIENT_PING_MIN_SECONDS = 5
# Concurrent calls (HTTP/2 streams) a client may have open on one connection, on every gRPC
# port (docs/operations.md, "Transport limits").
MAX_STREAMS_PER_CONNECTION = 100
# The flow-control window of a call's stream before its request is read.
STREAM_WINDOW_BYTES = 16 * 1024
# How long the stop lets gRPC send its GOAWAY (core's threads write it) before the held calls
# are refused.
_GOAWAY_SECONDS = 0.02


@dataclass
class _Serving:
    """The parts of a started server that live on its event loop."""

    server: grpc.aio.Server
    port: int
    health_server: grpc.aio.Server | None
    health_port: int | None
    pool: AsyncConnectionPool
    health: DatabaseHealthMonitor
    admission: Admission
    unfinished: UnfinishedRequests
    jwks: JwksKeySet | None
    core_calls: core_calls.CoreCalls
    trimmer: HeapTrimmer

    async def stop(self, grace: float) -> None:
        """Refuse new calls (UNAVAILABLE) and report NOT_SERVING, let in-flight calls finish
        within `grace`, close the pool."""
        # New calls are held, then refused once gRPC's stop has begun: none is left for gRPC
        # to cancel (admission.py).
        self.admission.close()
        await self.health.stop()
        await asyncio.sleep(SETTLE_SECONDS)
        stopping = asyncio.ensure_future(self.server.stop(grace))
        # Its first step tells every connection to go away (GOAWAY): before the refusals, so
        # that their retries open new connections.
        await asyncio.sleep(_GOAWAY_SECONDS)
        self.admission.release()
        await stopping
        # After the drain: until then the kubelet reads NOT_SERVING there, as it would on the
        # API port, rather than a refused connection.
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.unfinished.close()
        await self.core_calls.stop()
        await self.trimmer.stop()
        if self.jwks is not None:
            await self.jwks.close()
        await self.pool.close()


@dataclass
class RunningServer:
    """A started server, its event loop's thread, and what must be stopped with it."""

    port: int
    _serving: _Serving
    _loop: asyncio.AbstractEventLoop
    _thread: threading.Thread
    metrics_server: WSGIServer | None = None
    metrics_port: int | None = None
    tracing: "Tracing | None" = None
    _stopped: bool = field(default=False)

    def pool_stats(self) -> dict[str, int]:
        """This server's database pool, in numbers (psycopg_pool's get_stats): unlike the
        process-wide metrics, its own even beside other servers in the same process."""
        return self._serving.pool.get_stats()

    @property
    def jwks(self) -> JwksKeySet | None:
        """The JWKS key set the server verifies with (JWT_JWKS_URL), else None."""
        return self._serving.jwks

    @property
    def health_port(self) -> int | None:
        """The plaintext health-only port (with TLS on), else None."""
        return self._serving.health_port

    def stop(self, grace: float) -> None:
        """Refuse new calls, let in-flight ones finish within `grace`, and stop the loop."""
        if self._stopped:
            return
        self._stopped = True
        try:
            _on_loop(self._loop, self._serving.stop(grace))
        finally:
            _stop_loop(self._loop, self._thread)
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            if self.tracing is not None:
                self.tracing.shutdown()  # the spans of the last calls, exported


def start(
    settings: Settings,
    *,
    host: str = "[::]",
    serve_metrics: bool = True,
    reuse_port: bool = False,
    span_processors: "Sequence[SpanProcessor]" = (),
) -> RunningServer:
    """Check the database, open the pool, and start serving on settings.grpc_port (0: any).

    `reuse_port` lets several worker processes share the port; `serve_metrics` is off in
    workers, whose parent serves their sum. `span_processors` (tests: an in-memory exporter's)
    turn tracing on beside settings.tracing_exporters.
    """
    startup_check.check_database_at_start_up(settings)
    tracing = None
    if settings.tracing_exporters or span_processors:
        from profile_service.runtime import tracing as tracing_setup  # imports OpenTelemetry

        tracing = tracing_setup.start(settings.tracing_exporters, span_processors)
    loop = new_event_loop(settings.event_loop)
    thread = threading.Thread(target=loop.run_forever, name="grpc-loop", daemon=True)
    thread.start()
    try:
        serving = _on_loop(loop, _start(settings, host, reuse_port, tracing))
    except BaseException:
        _stop_loop(loop, thread)
        if tracing is not None:
            tracing.shutdown()
        raise
    running = RunningServer(
        port=serving.port, _serving=serving, _loop=loop, _thread=thread, tracing=tracing
    )
    if serve_metrics:
        running.metrics_server, running.metrics_port = metrics.serve(settings.metrics_port)
    _LOGGER.info("serving %s on port %d", SERVICE_NAME, serving.port)
    return running


async def _start(
    settings: Settings, host: str, reuse_port: bool, tracing: "Tracing | None"
) -> _Serving:
    logs.redact_grpc_logs()
    pool = repository.create_pool(
        settings.database_url,
        size=settings.db_pool_size,
        prepare=settings.db_prepare,
        timeout_ms=deadlines.statement_timeout_ms(None, settings.db_timeout_seconds),
    )
    await pool.open(wait=False)
    health_servicer = HealthServicer()
    liveness = DatabaseLiveness(settings.db_silent_seconds)
    monitor = DatabaseHealthMonitor(
        settings.database_url,
        pool,
        health_servicer,
        settings.health_check_interval_seconds,
        liveness,
    )
    store = ProfileStore(
        pool,
        db_timeout_seconds=settings.db_timeout_seconds,
        liveness=liveness,
        database_refusal=monitor.refusal,
        synchronous_replication=lambda: monitor.synchronous_replication,
        on_database_error=monitor.recheck,
        database_span=None if tracing is None else tracing.database_span(),
    )
    profiles = repository.ProfileRepository(store, FieldCipher(settings.encryption_keys))
    service = ProfileService(profiles, min_retention_days=settings.purge_min_retention_days)
    admission = Admission()
    # One bound for the process: the health port's calls count against it too.
    unfinished = UnfinishedRequests()
    jwks = JwksKeySet(settings.jwt_jwks_url) if settings.jwt_jwks_url else None
    others = core_calls.server_ids()
    server = grpc.aio.server(options=_server_options(settings, reuse_port))
    # Every handler registered through it reads its request within unfinished's bounds.
    bounded = Bounded(server, unfinished)
    # The request path: access log (request id, timing, metrics) → the call's span, when
    # tracing is on (absent otherwise: no cost) → a body that is not protobuf → refused while
    # draining → unexpected errors as INTERNAL → auth → servicer.
    interceptors: list[UnaryInterceptor] = [
        AccessLogInterceptor(log_successful_calls=settings.access_log_all)
    ]
    if tracing is not None:
        interceptors.append(tracing.interceptor())
    interceptors += [
        RejectMalformed(),
        admission,
        InternalErrorInterceptor(),
        AuthInterceptor(TokenVerifier(settings, jwks=jwks)),
    ]
    register(
        bounded,
        ProfileServicer(service, purge_min_retention_days=settings.purge_min_retention_days),
        pb.DESCRIPTOR.services_by_name["ProfileService"],
        interceptors,
        parse_or_mark,
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, bounded)
    reflection.enable(
        bounded,
        (
            pb.DESCRIPTOR.services_by_name["ProfileService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ),
    )
    health_server = health_port = None
    try:
        address = f"{host}:{settings.grpc_port}"
        if settings.tls is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, tls.server_credentials(settings.tls))
        if settings.grpc_health_port is not None:
            health_server = grpc.aio.server(options=_server_options(settings, reuse_port))
            health_pb2_grpc.add_HealthServicer_to_server(
                health_servicer, Bounded(health_server, unfinished)
            )
            health_port = health_server.add_insecure_port(f"{host}:{settings.grpc_health_port}")
        await monitor.start()
        if jwks is not None:
            # In the background: an issuer that does not answer must not stop the start-up
            # (tokens signed with the secret keep working meanwhile).
            jwks.start()
        await server.start()
        if health_server is not None:
            await health_server.start()
        counts = core_calls.CoreCalls(core_calls.server_ids() - others)
        counts.start()
        trimmer = HeapTrimmer()
        trimmer.start()
    except BaseException:
        if jwks is not None:
            await jwks.close()
        await monitor.stop()
        await pool.close()
        raise
    return _Serving(
        server=server,
        port=port,
        health_server=health_server,
        health_port=health_port,
        pool=pool,
        health=monitor,
        admission=admission,
        unfinished=unfinished,
        jwks=jwks,
        core_calls=counts,
        trimmer=trimmer,
    )


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of `kind` (config.Settings.event_loop): uvloop's, or asyncio's own."""
    if kind == "uvloop":
        import uvloop  # the server extra has it; config.py checked it imports

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _on_loop(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` on `loop` (in its own thread) and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def _server_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    age_ms = int(settings.max_connection_age_seconds * 1000)
    return [
        # HTTP/2 rapid reset (CVE-2023-44487): without a cap, one connection opening and
        # resetting streams in a loop makes gRPC start and cancel calls faster than it serves
        # anyone else. Clients queue calls beyond the cap rather than fail them.
        ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
        # A call's stream may receive STREAM_WINDOW_BYTES before anything reads it, not the
        # megabytes gRPC's bandwidth probing grants: a flood of unfinished requests that the
        # server has not yet reached (unfinished.py bounds the ones it has) holds that much
        # each. A request larger than the window costs one more round trip, once its reader
        # asks for it (docs/operations.md, "Transport limits").
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        # HTTP/2 connections live long and a Service balances connections, not calls: closing
        # each connection after a while (with a grace for calls on it) makes clients reconnect
        # and spread over the pods, new ones included.
        ("grpc.max_connection_age_ms", age_ms),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_seconds * 1000)),
        # gRPC turns SO_REUSEPORT on by default; a lone server keeps it off, so that a second
        # one on the same port fails loudly instead of silently sharing its calls.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # gRPC's default is 4 MiB, read before the token is checked: sized to the largest
        # valid request instead (validation.MAX_REQUEST_BYTES).
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        # Keepalive, both ways. gRPC's default answers a client that pings more often than
        # every 5 minutes with GOAWAY "too_many_pings"; clients may ping every
        # CLIENT_PING_MIN_SECONDS, with or without calls in flight (documented).
        ("grpc.keepalive_permit_without_calls", 1),
        # A second of slack: a client's timers fire a little early now and then.
        ("grpc.http2.min_ping_interval_without_data_ms", (CLIENT_PING_MIN_SECONDS - 1) * 1000),
        ("grpc.http2.max_ping_strikes", 2),
        # The server pings an idle connection each minute, and drops it when no answer comes
        # within 20 s: a client that vanished does not hold its connection for hours.
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
