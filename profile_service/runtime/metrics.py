"""Prometheus metrics, served on METRICS_PORT.

With several worker processes (`serve --workers N`), prometheus_client's multiprocess mode is
used: workers write to PROMETHEUS_MULTIPROC_DIR and the parent process serves the sum.
"""

import os
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from psycopg_pool import AsyncConnectionPool

REQUESTS = Counter(
    "profile_requests", "API calls answered, by method and gRPC status code.", ["method", "code"]
)
LATENCY = Histogram(
    "profile_request_latency_seconds",
    "Time to answer an API call, by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_SIZE = Gauge("profile_db_pool_size", "Database connections open.", multiprocess_mode="livesum")
POOL_IN_USE = Gauge(
    "profile_db_pool_in_use", "Database connections lent to calls.", multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "profile_db_pool_waiting",
    "Calls waiting for a database connection.",
    multiprocess_mode="livesum",
)
DB_READ_ONLY = Gauge(
    "profile_db_read_only",
    "1 while the database refuses writes (a standby, or set read-only); writes are UNAVAILABLE.",
    multiprocess_mode="livemax",
)
DB_SILENT = Gauge(
    "profile_db_silent",
    "1 while the database is silent (a request waited DB_SILENT_SECONDS with nothing heard); "
    "calls are UNAVAILABLE at once.",
    multiprocess_mode="livemax",
)
UNFINISHED_DROPPED = Counter(
    "profile_unfinished_requests_dropped",
    "Calls ended RESOURCE_EXHAUSTED before their request arrived (unfinished.py), by why: "
    "late (not within the time allowed) or evicted (too many waiting, this one the oldest).",
    ["why"],
)
GRPC_CALLS_STARTED = Counter(
    "profile_grpc_calls_started",
    "Calls gRPC started on this process's ports (channelz): API, health and reflection calls, "
    "and those gRPC itself ended before any handler.",
)
GRPC_CALLS_FAILED = Counter(
    "profile_grpc_calls_failed",
    "Of those, the calls that ended with a status other than OK (channelz).",
)
PURGED = Counter("profile_purged", "Profiles permanently deleted by Purge.")


_children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}


def observe_call(method: str, code: str, seconds: float) -> None:
    """Count one answered call and its latency."""
    # labels() takes a lock and builds a key on every call; the labelled children are cached.
    children = _children.get((method, code))
    if children is None:
        children = _children[(method, code)] = (
            REQUESTS.labels(method, code),
            LATENCY.labels(method),
        )
    children[0].inc()
    children[1].observe(seconds)


def observe_pool(pool: AsyncConnectionPool) -> None:
    """Copy the pool's current numbers into the gauges."""
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    POOL_SIZE.set(size)
    POOL_IN_USE.set(size - stats.get("pool_available", 0))
    POOL_WAITING.set(stats.get("requests_waiting", 0))


def forget_process(pid: int) -> None:
    """Drop an exited worker's live gauges from the multiprocess sum."""
    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(port: int) -> tuple[WSGIServer, int]:
    """Serve /metrics on `port` (0: any free port); return the server and the bound port.

    In a multiprocess parent, serves the workers' sum instead of this process's registry.
    """
    registry = None
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    server, _ = start_http_server(port, registry=registry) if registry else start_http_server(port)
    return server, int(server.server_port)
