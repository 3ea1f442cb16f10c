"""The SQL for profiles. Statements only: no authorization decisions (RLS makes those).

Each function enqueues its statements on a connection inside db.run_transaction's pipeline and
returns a reader for the result. The SQL text is fixed, so psycopg can prepare it once per
connection.
"""

from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from profile_service.validation import WRITABLE_FIELDS

Row = dict[str, Any]

_COLUMNS = ", ".join(WRITABLE_FIELDS)
_GET = "SELECT * FROM profile.profiles WHERE owner_id = %s"
_SOFT_DELETE = "SELECT * FROM profile.soft_delete_own_profile()"
_RESTART_DELETED = "SELECT profile.restart_own_deleted_profile()"
# One statement for create and update. Fields outside the mask are sent as NULL (so a created
# row has them NULL) and kept as they are on update (the `set_<field>` flags).
_UPSERT = (
    f"INSERT INTO profile.profiles AS p (owner_id, {_COLUMNS}) "
    f"VALUES (%(owner_id)s, {', '.join(f'%({c})s' for c in WRITABLE_FIELDS)}) "
    "ON CONFLICT (owner_id) DO UPDATE SET "
    + ", ".join(
        f"{c} = CASE WHEN %(set_{c})s THEN EXCLUDED.{c} ELSE p.{c} END" for c in WRITABLE_FIELDS
    )
    + " RETURNING *"
)
_EXPIRED = "deleted_at < now() - make_interval(days => %(days)s)"
_COUNT_EXPIRED = f"SELECT count(*) FROM profile.profiles WHERE {_EXPIRED}"
# Oldest first, a batch at a time. Two purges racing for a row is harmless: the second waits for
# the first's row lock, finds the row gone and does not count it.
_PURGE_BATCH = (
    "DELETE FROM profile.profiles WHERE id IN ("
    f"SELECT id FROM profile.profiles WHERE {_EXPIRED} ORDER BY deleted_at LIMIT %(limit)s)"
)

Reader = Callable[[], Any]


def get(conn: psycopg.Connection, owner_id: str) -> Callable[[], Row | None]:
    """The profile of `owner_id` that RLS lets the caller see, if any."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_GET, (owner_id,))
    return cur.fetchone


def upsert(
    conn: psycopg.Connection, owner_id: str, values: Mapping[str, Any], mask: frozenset[str]
) -> Callable[[], Row | None]:
    """Create or update the caller's profile; a soft-deleted one is wiped and started afresh."""
    conn.execute(_RESTART_DELETED)
    params: dict[str, Any] = {"owner_id": owner_id}
    for column in WRITABLE_FIELDS:
        value = values.get(column) if column in mask else None
        if column == "generation_params" and value is not None:
            value = Jsonb(value)
        params[column] = value
        params[f"set_{column}"] = column in mask
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_UPSERT, params)
    return cur.fetchone


def soft_delete(conn: psycopg.Connection) -> Callable[[], Row | None]:
    """Soft-delete the caller's own active profile; the reader gives it, or None."""
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_SOFT_DELETE)
    return cur.fetchone


def count_expired(conn: psycopg.Connection, retention_days: int) -> Callable[[], int]:
    """How many profiles were soft-deleted more than `retention_days` ago."""
    cur = conn.cursor()
    cur.execute(_COUNT_EXPIRED, {"days": retention_days})

    def read() -> int:
        row = cur.fetchone()
        return int(row[0]) if row else 0

    return read


def purge_batch(conn: psycopg.Connection, retention_days: int, limit: int) -> Callable[[], int]:
    """Delete up to `limit` expired profiles; the reader gives how many were deleted."""
    cur = conn.cursor()
    cur.execute(_PURGE_BATCH, {"days": retention_days, "limit": limit})
    return lambda: cur.rowcount
