"""The database boundary: a connection pool, and one statement per request.

Every RPC is a single call of a `profile_api` function (migration 0002), which switches to the
caller's role and sets its claims transaction-locally before its query: one statement, one
implicit transaction, one round trip. Nothing survives on the pooled connection afterwards,
and the login role itself can read nothing, so forgetting the role fails instead of bypassing
RLS.

The only session setting is `statement_timeout`, which is not a security setting: it is set at
session level and changed only when a call needs a different one, pipelined with that call's
statement (still one round trip, one implicit transaction: if the call fails, the change is
rolled back with it). Timeouts are rounded down to a short ladder (the maximum, then halves) so
that callers with similar deadlines reuse one setting. Besides it, this process remembers per
connection which statements are prepared, and keeps one cursor to reuse.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

import psycopg
from psycopg_pool import ConnectionPool

T = TypeVar("T")

_SET_TIMEOUT = "SELECT set_config('statement_timeout', %s, false)"


@dataclass(frozen=True)
class Query(Generic[T]):
    """One statement, its parameters, and how to read its result from the cursor."""

    sql: str
    params: tuple[Any, ...]
    read: Callable[[psycopg.Cursor[Any]], T]


@dataclass
class _Session:
    """What this process keeps per pooled connection: its settings, and one reused cursor."""

    cursor: psycopg.Cursor[Any]
    timeout_ms: int | None = None
    prepared: set[str] = field(default_factory=set)


_sessions: "WeakKeyDictionary[psycopg.Connection, _Session]" = WeakKeyDictionary()


def create_pool(conninfo: str, *, size: int, prepare: bool) -> ConnectionPool:
    """A closed pool of `size` autocommit connections; call `.open()` to start it.

    `prepare=False` turns server-side prepared statements off, as PgBouncer in transaction mode
    requires (the queries inside the profile_api functions are still planned once per session
    by PL/pgSQL).
    """
    return ConnectionPool(
        conninfo,
        min_size=size,
        max_size=size,
        open=False,
        name="profile",
        # Keep retrying a lost database for as long as the process lives.
        reconnect_timeout=float("inf"),
        kwargs={"autocommit": True, "prepare_threshold": 0 if prepare else None},
    )


def statement_timeout_ms(seconds_left: float | None, max_seconds: float) -> int:
    """The statement timeout for a call with `seconds_left` (None: no deadline).

    At most `max_seconds`; with a deadline, the largest of max, max/2, max/4, … that fits in
    the time left, so the database gives up before the caller's deadline.
    """
    ceiling = max(1, int(max_seconds * 1000))
    if seconds_left is None:
        return ceiling
    budget = int(seconds_left * 1000)
    timeout = ceiling
    while timeout > budget and timeout > 1:
        timeout //= 2
    return max(1, min(timeout, budget))


def run(conn: psycopg.Connection, query: Query[T], *, timeout_ms: int) -> T:
    """Run `query` on `conn` with `timeout_ms`, in one round trip.

    Usually a plain execute. When the session's timeout must change, or the statement is new to
    this connection (psycopg would otherwise wait for its Parse separately), the statement rides
    in a pipeline behind the change, still one round trip.
    """
    session = _sessions.get(conn)
    if session is None:
        # A cursor per call would rebuild its adapters each time (about 10 us).
        session = _sessions[conn] = _Session(conn.cursor())
    cur = session.cursor
    if session.timeout_ms == timeout_ms and query.sql in session.prepared:
        cur.execute(query.sql, query.params)
        return query.read(cur)
    with conn.pipeline():
        if session.timeout_ms != timeout_ms:
            conn.execute(_SET_TIMEOUT, (str(timeout_ms),))
        cur.execute(query.sql, query.params)
    result = query.read(cur)
    session.timeout_ms = timeout_ms
    session.prepared.add(query.sql)
    return result
