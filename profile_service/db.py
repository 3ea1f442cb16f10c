"""The database boundary: a connection pool and one RLS-scoped transaction per request.

Each transaction goes to PostgreSQL in a single pipeline, i.e. one network round trip:

    BEGIN [READ ONLY]
    SELECT set_config('role', ...), set_config('request.jwt.claims', ...), statement_timeout
    <the request's statements>
    COMMIT

The settings are transaction-local (`set_config(..., true)`), so nothing survives on a pooled
connection once the transaction ends; the login role itself can read nothing, so a statement
that somehow ran without them fails instead of bypassing RLS. Plain BEGIN/COMMIT are sent in
the pipeline because psycopg's `transaction()` waits for each of them separately.
"""

import logging
from collections.abc import Callable
from typing import Literal, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

_LOGGER = logging.getLogger(__name__)

DbRole = Literal["authenticated", "service_role"]
T = TypeVar("T")

# A unit of work enqueues its statements on the connection and returns a reader, called once the
# pipeline has been synced, that turns the cursors' results into the value returned.
Work = Callable[[psycopg.Connection], Callable[[], T]]

_BEGIN = {True: "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", False: "BEGIN"}
_SET_CONTEXT = (
    "SELECT set_config('role', %s, true),"
    " set_config('request.jwt.claims', %s, true),"
    " set_config('statement_timeout', %s, true)"
)


def create_pool(conninfo: str, *, min_size: int, max_size: int, prepare: bool) -> ConnectionPool:
    """A closed pool of autocommit connections; call `.open()` to start it.

    `prepare=False` turns server-side prepared statements off, as PgBouncer in transaction mode
    requires.
    """
    return ConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name="profile",
        kwargs={"autocommit": True, "prepare_threshold": 0 if prepare else None},
    )


def run_transaction(
    conn: psycopg.Connection,
    work: "Work[T]",
    *,
    role: DbRole,
    claims_json: str,
    readonly: bool,
    statement_timeout_ms: int,
) -> T:
    """Run `work` in one transaction on `conn` as `role` with `claims_json`, in one round trip.

    On any error the transaction is rolled back (when the connection still allows it) and the
    error propagates; the caller maps it to a status.
    """
    try:
        with conn.pipeline():
            conn.execute(_BEGIN[readonly])
            conn.execute(_SET_CONTEXT, (role, claims_json, str(statement_timeout_ms)))
            read = work(conn)
            conn.execute("COMMIT")
        return read()
    except BaseException:
        _rollback_quietly(conn)
        raise


def _rollback_quietly(conn: psycopg.Connection) -> None:
    if conn.closed or conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        # A broken connection: the pool sees it is bad and discards it on return.
        _LOGGER.debug("rollback failed on a broken connection", exc_info=True)
