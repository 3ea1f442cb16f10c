"""Exactly one round trip to PostgreSQL per Get, Upsert and SoftDelete, proven by libpq's trace.

A round trip is a Sync message from the client (the server answers once per Sync); the simple
query protocol ("Query" messages) would re-plan the RLS query on every call, so none may appear.
"""

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.pq import Trace
from psycopg_pool import AsyncConnectionPool

from profile_service.domain.caller import Caller
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import WRITABLE_FIELDS
from profile_service.errors import Unavailable
from profile_service.storage import repository
from profile_service.storage.liveness import DatabaseLiveness
from profile_service.storage.repository import ProfileRepository
from profile_service.storage.store import ProfileStore
from tests.conftest import ThrowawayDatabase
from tests.pgbouncer import VIA_PGBOUNCER

T = TypeVar("T")


@dataclass
class Traced:
    """A service on a one-connection pool, and the client messages libpq sent since last asked;
    `run` waits for a coroutine on the pool's event loop."""

    service: ProfileService
    pool: AsyncConnectionPool
    messages: Callable[[], list[str]]
    prepared: bool
    run: Callable[[Awaitable[Any]], Any]


@pytest.fixture
def run() -> Iterator[Callable[[Awaitable[T]], T]]:
    """Run a coroutine to completion on this test's event loop."""
    loop = asyncio.new_event_loop()
    try:
        yield loop.run_until_complete
    finally:
        loop.close()


async def _one_value(pool: AsyncConnectionPool, sql: str) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        cursor = await conn.execute(sql)  # type: ignore[arg-type]
        return await cursor.fetchall()


# Behind PgBouncer in transaction mode (the suite's second pass) only DB_PREPARE=false applies:
# a session's prepared statements and settings would land on other clients' server connections.
_MODES = [False] if VIA_PGBOUNCER else [True, False]


@pytest.fixture(params=_MODES, ids=["prepared" if m else "unprepared" for m in _MODES])
def service_and_trace(
    request: pytest.FixtureRequest,
    test_db: ThrowawayDatabase,
    admin: Any,
    run: Callable[[Awaitable[Any]], Any],
) -> Iterator["Traced"]:
    pool = repository.create_pool(test_db.service_url, size=1, prepare=request.param)
    run(pool.open(wait=True))
    with tempfile.TemporaryFile(mode="w+") as trace_file:
        conn = run(pool.getconn())  # the only connection: every call below uses it
        conn.pgconn.trace(trace_file.fileno())
        conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS | Trace.REGRESS_MODE)
        run(pool.putconn(conn))
        offset = 0

        def messages_since_last_call() -> list[str]:
            nonlocal offset
            trace_file.seek(offset)
            text = trace_file.read()
            offset = trace_file.tell()
            return [line.split("\t")[2] for line in text.splitlines() if line.startswith("F\t")]

        try:
            service = ProfileService(
                ProfileRepository(
                    ProfileStore(pool, db_timeout_seconds=5, liveness=DatabaseLiveness(1.0))
                ),
                min_retention_days=30,
            )
            yield Traced(service, pool, messages_since_last_call, request.param, run)
        finally:
            run(pool.close())


def _user() -> Caller:
    sub = str(uuid.uuid4())
    claims = {"sub": sub, "role": "authenticated", "exp": int(time.time()) + 60}
    return Caller("authenticated", sub, json.dumps(claims), time.time() + 60)


def test_get_upsert_and_soft_delete_take_one_round_trip_each(service_and_trace: Traced) -> None:
    service, messages, run = (
        service_and_trace.service,
        service_and_trace.messages,
        service_and_trace.run,
    )
    caller = _user()
    everything = frozenset(WRITABLE_FIELDS)
    # A deadline shorter than DB_TIMEOUT_SECONDS changes the session's statement_timeout: that
    # change rides in the same round trip.
    soon = time.monotonic() + 1.0
    for round_, deadline in enumerate((None, None, soon, soon, None)):
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "Upsert": lambda d=deadline: service.upsert(caller, "", {"age": 30}, everything, d),
            "Get": lambda d=deadline: service.get(caller, "", d),
            "SoftDelete": lambda d=deadline: service.soft_delete(caller, "", d),
        }
        for name, call in calls.items():
            messages()
            run(call())
            sent = messages()
            assert sent.count("Sync") == 1, (round_, name, sent)
            assert "Query" not in sent, (round_, name, sent)
            if service_and_trace.prepared:
                # The first call after the deadline changes also sends the new timeout.
                changes_timeout = round_ in (2, 4) and name == "Upsert"
                executes = 2 if changes_timeout else 1
                assert sent.count("Execute") == executes, (round_, name, sent)
                if not changes_timeout:
                    assert "Parse" not in sent, (round_, name, sent)  # Bind/Execute only
            else:
                # Every call: a transaction-local timeout, then the statement, parsed unnamed.
                assert sent.count("Execute") == 2, (round_, name, sent)
                assert sent.count("Parse") == 2, (round_, name, sent)


@pytest.mark.skipif(VIA_PGBOUNCER, reason="prepared mode is not for PgBouncer's transaction mode")
def test_a_new_connection_is_set_up_before_its_first_call(
    test_db: ThrowawayDatabase, admin: Any, run: Callable[[Awaitable[Any]], Any]
) -> None:
    """The statements are prepared, and the timeout set, when the pool opens a connection."""
    pool = repository.create_pool(test_db.service_url, size=1, timeout_ms=1234)
    run(pool.open(wait=True))
    try:
        names = {row[0] for row in run(_one_value(pool, "SELECT name FROM pg_prepared_statements"))}
        timeout = run(_one_value(pool, "SHOW statement_timeout"))
        assert {s.name for s in repository.STATEMENTS} <= names
        assert timeout == [("1234ms",)]
    finally:
        run(pool.close())


def test_the_timeout_sent_with_a_statement_applies_to_it(
    service_and_trace: Traced, test_db: ThrowawayDatabase
) -> None:
    """A call blocked by a row lock ends at its deadline's statement_timeout, not later."""
    service, run = service_and_trace.service, service_and_trace.run
    caller = _user()
    run(service.upsert(caller, "", {"age": 30}, frozenset(WRITABLE_FIELDS), None))
    with psycopg.connect(test_db.admin_url) as locker:  # holds the row until the block ends
        # Should the timeout not apply, the server ends the lock after 3 s and the call below
        # succeeds: the test fails instead of hanging.
        locker.execute("SET idle_in_transaction_session_timeout = '3s'")
        locker.execute("SELECT 1 FROM profile.profiles FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="timed out"):
            run(
                service.upsert(
                    caller, "", {"age": 31}, frozenset(WRITABLE_FIELDS), time.monotonic() + 0.6
                )
            )
        waited = time.monotonic() - started
    # It did wait on the lock: the ladder's 5000 ms halved to fit the deadline, 312 ms. (That it
    # ended then, not at the lock's end, is the Unavailable above.)
    assert waited > 0.2, waited
    assert run(service.get(caller, "", None))["age"] == 30


def test_each_mode_leaves_on_the_server_connection_only_what_it_promises(
    service_and_trace: Traced,
) -> None:
    """Prepared: our statements and a session timeout. Unprepared (PgBouncer, where the next
    transaction on a server connection may be another client's): nothing at all."""
    caller, run, pool = _user(), service_and_trace.run, service_and_trace.pool
    run(
        service_and_trace.service.upsert(
            caller, "", {"age": 30}, frozenset(WRITABLE_FIELDS), time.monotonic() + 1
        )
    )
    timeout = run(_one_value(pool, "SHOW statement_timeout"))[0]
    rows = run(_one_value(pool, "SELECT name FROM pg_prepared_statements"))
    if service_and_trace.prepared:
        assert timeout == ("625ms",)  # the ladder's step for a one-second deadline
        assert {name for (name,) in rows} == {s.name for s in repository.STATEMENTS}
    else:
        assert timeout == ("0",)  # the server's default
        assert rows == []


def test_a_batch_get_takes_one_round_trip(service_and_trace: Traced) -> None:
    service, messages, run = (
        service_and_trace.service,
        service_and_trace.messages,
        service_and_trace.run,
    )
    owners = []
    for _ in range(3):
        caller = _user()
        run(service.upsert(caller, "", {"age": 30}, frozenset(WRITABLE_FIELDS), None))
        owners.append(caller.sub)
    service_role = Caller(
        "service_role", None, json.dumps({"role": "service_role"}), time.time() + 60
    )
    messages()
    rows = run(service.batch_get(service_role, [*owners, owners[0]], None))
    sent = messages()
    assert [row["owner_id"] for row in rows] == [*owners, owners[0]]
    assert sent.count("Sync") == 1, sent
    assert "Query" not in sent, sent
