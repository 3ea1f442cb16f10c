"""`python -m bench.inprocess`: what our own Python costs per Get, layer by layer, without gRPC
or a database in the way.

The API's handler chain is built as server.py builds it (the unfinished-request bound, the
access log, malformed bodies, admission, internal errors, auth, the servicer) and called in a
loop on the service's event loop with a stand-in for gRPC's context; the store answers a row
recorded once from a real database (so the row → Profile mapping is real too). Each line adds
one layer, outermost last; the differences are each layer's cost. No network, no other
process: steadier than the load bench, and a place to try a change to one layer.
"""

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench import database
from profile_service.auth import tokens
from profile_service.auth.verify import _CALLER, AuthInterceptor, TokenVerifier
from profile_service.domain.service import ProfileService
from profile_service.runtime.config import Settings
from profile_service.storage import db, repository
from profile_service.storage.field_cipher import FieldCipher
from profile_service.transport.access_log import AccessLogInterceptor
from profile_service.transport.admission import Admission
from profile_service.transport.internal_errors import InternalErrorInterceptor
from profile_service.transport.malformed import RejectMalformed
from profile_service.transport.server import new_event_loop
from profile_service.transport.servicer import ProfileServicer
from profile_service.transport.unary_interceptor import Behavior, UnaryInterceptor
from profile_service.transport.unfinished import UnfinishedRequests
from profile_service.v1 import profile_service_pb2 as pb

_SECRET = "bench-inprocess-secret-long-enough-for-hs256"  # noqa: S105 - never served
_GET = "/profile.v1.ProfileService/Get"


class _Context:
    """What the handlers use of grpc.aio's servicer context, for a call that succeeds."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], request: Any) -> None:
        self._metadata = metadata
        self._request = request
        self._trailing: tuple[tuple[str, str], ...] = ()

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def set_trailing_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing

    def time_remaining(self) -> float:
        return 5.0

    def code(self) -> None:
        return None

    async def read(self) -> Any:
        return self._request


class _RecordedStore:
    """Answers every query with one recorded value, as the database would."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    async def run(self, query_for: Callable[[float], db.Query[Any]], deadline: float | None) -> Any:
        return query_for(time.time() + 5).read(self._value)


class _AsCaller(UnaryInterceptor):
    """Stands for auth when it is left out: sets the verified caller the servicer reads."""

    def __init__(self, token: str, verifier: TokenVerifier) -> None:
        self._caller = asyncio.run(verifier.verify(token))

    def wrap(self, method: str, behavior: Behavior) -> Behavior:
        caller = self._caller

        async def handle(request: Any, context: Any) -> Any:
            _CALLER.set(caller)
            return await behavior(request, context)

        return handle


def _record_row(sub: str) -> bytes:
    """The raw value the Get statement returns for a seeded profile of `sub`."""
    bench_db = database.prepare("profile_bench_inprocess", 0)
    try:
        import psycopg

        with psycopg.connect(bench_db.admin_url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO profile.profiles (owner_id, age, sex, height_cm, weight_kg,"
                " experience_level, limitations, primary_goal, available_equipment,"
                " session_length, generation_params) VALUES (%s, 34, 'female', 170, 62,"
                " 'intermediate', 'none', 'strength', ARRAY['barbell','dumbbells'], '45m',"
                ' \'{"split": "upper-lower", "days_per_week": 4}\')',
                (sub,),
            )

        async def fetch() -> bytes:
            pool = repository.create_pool(bench_db.service_url, size=1)
            await pool.open(wait=True)
            verifier = TokenVerifier(_settings())
            caller = await verifier.verify(tokens.mint(_SECRET, role="authenticated", sub=sub))
            params = (caller.role, caller.claims_json, sub)
            raw = db.Query(repository.GET, params, lambda value: value)
            async with pool.connection() as conn:
                from profile_service.domain import deadlines

                value = await db.run(conn, raw, deadlines.budget(None, 5.0))
            await pool.close()
            assert value is not None
            return value

        return asyncio.run(fetch())
    finally:
        database.drop(bench_db)


def _settings() -> Settings:
    return Settings.from_env({"DATABASE_URL": "postgresql://unused", "JWT_SECRET": _SECRET})


def main(argv: list[str] | None = None) -> int:
    """Time the chain, one layer more per line."""
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000, help="calls per line")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)
    sub = str(uuid.uuid4())
    row = _record_row(sub)
    settings = _settings()
    token = tokens.mint(_SECRET, role="authenticated", sub=sub)
    metadata = (("authorization", f"Bearer {token}"), ("user-agent", "grpc-c/50.0"))
    request = pb.GetRequest()
    service = ProfileService(
        repository.ProfileRepository(_RecordedStore(row)), min_retention_days=30
    )
    servicer = ProfileServicer(service, purge_min_retention_days=30)
    verifier = TokenVerifier(settings)
    layers: list[tuple[str, UnaryInterceptor]] = [
        ("auth (cached token)", AuthInterceptor(verifier)),
        ("internal errors", InternalErrorInterceptor()),
        ("admission", Admission()),
        ("malformed bodies", RejectMalformed()),
        ("access log and metrics", AccessLogInterceptor()),
    ]
    loop = new_event_loop(args.loop)
    print(f"{args.calls:,} Gets per line, {args.loop}; microseconds per call:")
    previous = 0.0
    for depth in range(len(layers) + 2):
        if depth <= len(layers):
            chain = [layer for _, layer in reversed(layers[:depth])]
            if depth == 0:
                chain = [_AsCaller(token, verifier)]
            behavior: Behavior = servicer.Get
            for interceptor in reversed(chain):
                behavior = interceptor.wrap(_GET, behavior)
            name = "servicer, service, row mapping" if depth == 0 else f"+ {layers[depth - 1][0]}"
            call = behavior
        else:
            bound = UnfinishedRequests()
            handler = bound.wrap(_unary(behavior))
            stream_unary: Any = handler.stream_unary
            name = "+ unfinished-request bound"

            async def call(request: Any, context: Any, _h: Any = stream_unary) -> Any:
                return await _h(None, context)

        per_call = loop.run_until_complete(_time(call, request, metadata, args.calls))
        print(f"  {per_call:7.1f}  (+{per_call - previous:5.1f})  {name}")
        previous = per_call
    # The whole chain again, the row's limitations sealed (PROFILE_ENCRYPTION_KEYS): what
    # opening it costs a Get.
    cipher = FieldCipher([("bench", bytes(32))])
    sealed_profiles = repository.ProfileRepository(_RecordedStore(_sealed(row, cipher)), cipher)
    behavior = ProfileServicer(
        ProfileService(sealed_profiles, min_retention_days=30), purge_min_retention_days=30
    ).Get
    for _, layer in layers:
        behavior = layer.wrap(_GET, behavior)
    sealed_call: Any = bound.wrap(_unary(behavior)).stream_unary

    async def call_sealed(request: Any, context: Any) -> Any:
        return await sealed_call(None, context)

    per_call = loop.run_until_complete(_time(call_sealed, request, metadata, args.calls))
    print(f"  {per_call:7.1f}  (+{per_call - previous:5.1f})  + limitations sealed")
    loop.run_until_complete(bound.close())
    loop.close()
    return 0


def _sealed(row: bytes, cipher: FieldCipher) -> bytes:
    """The recorded row with its limitations sealed, as PostgreSQL would return it (UTF-8)."""
    values = json.loads(row)
    values["limitations"] = cipher.seal("limitations", values["owner_id"], values["limitations"])
    return json.dumps(values, ensure_ascii=False).encode()


def _unary(behavior: Behavior) -> Any:
    import grpc

    return grpc.unary_unary_rpc_method_handler(behavior)


async def _time(call: Any, request: Any, metadata: Any, calls: int) -> float:
    for _ in range(calls // 10):  # warm-up
        await call(request, _Context(metadata, request))
    started = time.perf_counter()
    for _ in range(calls):
        await call(request, _Context(metadata, request))
    return 1e6 * (time.perf_counter() - started) / calls


if __name__ == "__main__":
    raise SystemExit(main())
