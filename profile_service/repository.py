"""The SQL for profiles: one call of a `profile_api` function per use case (migration 0002).

Statements only, fixed text (so psycopg prepares each once per connection), no authorization
decisions: the functions run as the caller's role under row-level security.
"""

from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from profile_service.auth import Caller
from profile_service.db import Query

Row = DictRow

_GET = "SELECT * FROM profile_api.get_profile(%s, %s, %s)"
_UPSERT = "SELECT * FROM profile_api.upsert_profile(%s, %s, %s)"
_SOFT_DELETE = "SELECT * FROM profile_api.soft_delete_profile(%s)"
_PURGE = "SELECT profile_api.purge_profiles(%s, %s, %s, %s) AS n"


def _row(cur: psycopg.Cursor[DictRow]) -> Row | None:
    return cur.fetchone()


def _count(cur: psycopg.Cursor[DictRow]) -> int:
    row = cur.fetchone()
    return int(row["n"]) if row else 0


def get(caller: Caller, owner_id: str) -> Query[Row | None]:
    """The profile of `owner_id` that RLS lets the caller see, if any."""
    return Query(_GET, (caller.role, caller.claims_json, owner_id), _row)


def upsert(caller: Caller, values: Mapping[str, Any], mask: frozenset[str]) -> Query[Row | None]:
    """Create or update the caller's profile with the `mask` fields of `values`."""
    masked = {k: v for k, v in values.items() if k in mask}
    return Query(_UPSERT, (caller.claims_json, Jsonb(masked), sorted(mask)), _row)


def soft_delete(caller: Caller) -> Query[Row | None]:
    """Soft-delete the caller's own active profile; the row, or None."""
    return Query(_SOFT_DELETE, (caller.claims_json,), _row)


def purge_batch(caller: Caller, retention_days: int, limit: int, dry_run: bool) -> Query[int]:
    """Delete up to `limit` profiles deleted over `retention_days` ago (or count them all)."""
    return Query(_PURGE, (caller.claims_json, retention_days, limit, dry_run), _count)
