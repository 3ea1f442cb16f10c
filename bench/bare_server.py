"""A bare gRPC server: every ProfileService RPC answers a constant, nothing else.

No interceptors, no token check, no database: what gRPC in Python costs on its own, i.e. the
ceiling the real service is compared with. It uses the generated servicer, so each call still
parses its request and serializes the answer (every field set), as any service must.
`--kind sync` is `grpc.server` with a thread pool, `--kind aio` is `grpc.aio`, on uvloop with
`--uvloop`. `--kind aio-yield` suspends every call once (one loop iteration, no I/O): what
a suspension alone costs. `--kind aio-io` is `grpc.aio` whose every call first awaits one
round trip to PostgreSQL (`SELECT 1`, prepared, through the service's own libpq path: db.run
on its pool): the ceiling of "asyncio gRPC plus one I/O wait", which tells what of the
service's cost is the architecture's and what is ours. The caller pins the process to a CPU
(taskset).

    python -m bench.bare_server --kind sync --port 50100 [--threads 16]
    python -m bench.bare_server --kind aio-io --port 50100 --database-url URL [--uvloop]
"""

import argparse
import asyncio
import signal
import threading
import types
from collections.abc import Awaitable, Callable
from concurrent import futures
from typing import Any

import grpc

from bench.payloads import constant_profile
from profile_service.domain import deadlines
from profile_service.runtime.lifecycle import schedule_as_batch
from profile_service.storage import db
from profile_service.transport.server import new_event_loop
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc


def _answers(answer: pb.Profile) -> dict[str, Callable[[Any], Any]]:
    """Each RPC's constant answer, by its response type: the RPCs are the descriptor's, and a
    type not named here answers its empty message, so a new RPC needs nothing here."""
    by_type: dict[str, Callable[[Any], Any]] = {
        "Profile": lambda request: answer,
        "BatchGetProfilesResponse": lambda request: pb.BatchGetProfilesResponse(
            profiles=[answer] * len(request.owner_ids)
        ),
    }
    service = pb.DESCRIPTOR.services_by_name["ProfileService"]
    return {
        m.name: by_type.get(m.output_type.name, _empty(m.output_type.name)) for m in service.methods
    }


def _empty(message: str) -> Callable[[Any], Any]:
    """An answer of `message`'s type with nothing set."""
    message_class = getattr(pb, message)
    return lambda request: message_class()


def _sync_servicer(answer: pb.Profile) -> Any:
    # What the generated registration reads: an attribute per RPC (the stubs' abstract class
    # would want each written out).
    servicer = types.SimpleNamespace()
    for name, respond in _answers(answer).items():
        setattr(servicer, name, lambda request, context, respond=respond: respond(request))
    return servicer


def _aio_servicer(answer: pb.Profile, io: Callable[[], Awaitable[None]] | None = None) -> Any:
    """Every call first awaits `io` (aio-yield, aio-io), if given."""
    servicer = types.SimpleNamespace()
    for name, respond in _answers(answer).items():

        async def call(request: Any, context: Any, respond: Callable[[Any], Any] = respond) -> Any:
            if io is not None:
                await io()
            return respond(request)

        setattr(servicer, name, call)
    return servicer


def _serve_sync(port: int, threads: int, answer: pb.Profile) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads))
    pb_grpc.add_ProfileServiceServicer_to_server(_sync_servicer(answer), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print("ready", flush=True)
    stop.wait()
    server.stop(0).wait()


_ONE = db.Statement("bench_one", "SELECT 1")


async def _yield_once() -> None:
    """A suspension and nothing else: the handler's task waits one loop iteration."""
    await asyncio.sleep(0)


async def _serve_aio(port: int, answer: pb.Profile, kind: str, database_url: str | None) -> None:
    pool = None
    io: Callable[[], Awaitable[None]] | None = _yield_once if kind == "aio-yield" else None
    if kind == "aio-io":
        assert database_url is not None
        pool = db.create_pool(
            database_url, size=16, prepare=True, statements=[_ONE], timeout_ms=5000
        )
        await pool.open(wait=True)
        query = db.Query(_ONE, (), lambda value: value)

        async def select_one() -> None:  # as store.ProfileStore runs a query
            budget = deadlines.budget(None, 5.0)
            conn = await pool.getconn(timeout=budget.seconds_left())
            try:
                await db.run(conn, query, budget)
            finally:
                await pool.putconn(conn)

        io = select_one
    server = grpc.aio.server()
    pb_grpc.add_ProfileServiceServicer_to_server(_aio_servicer(answer, io), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await server.start()
    print("ready", flush=True)
    await stop.wait()
    await server.stop(0)
    if pool is not None:
        await pool.close()


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["sync", "aio", "aio-yield", "aio-io"], required=True)
    parser.add_argument("--uvloop", action="store_true", help="aio: run on uvloop")
    parser.add_argument("--database-url", help="aio-io: the service login's URL")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=16, help="sync: thread pool size")
    parser.add_argument(
        "--sched-batch", action="store_true", help="run under SCHED_BATCH, as the service does"
    )
    args = parser.parse_args()
    if args.sched_batch:
        # Before any thread starts, as the service does it (profile_service.runtime.lifecycle.run).
        schedule_as_batch()
    answer = constant_profile()
    if args.kind == "sync":
        _serve_sync(args.port, args.threads, answer)
        return
    if args.kind == "aio-io" and not args.database_url:
        parser.error("--kind aio-io needs --database-url")
    loop = new_event_loop("uvloop" if args.uvloop else "asyncio")
    loop.run_until_complete(_serve_aio(args.port, answer, args.kind, args.database_url))
    loop.close()


if __name__ == "__main__":
    main()
