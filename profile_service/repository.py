"""The SQL for profiles: one call of a `profile_api` function per use case (migration 0002).

Statements only, fixed text (so psycopg prepares each once per connection), no authorization
decisions: the functions run as the caller's role under row-level security.

Rows come back as one JSON text column built by PostgreSQL, as PostgREST does: psycopg then
sets up one loader instead of fifteen, and Python builds no UUID or datetime objects
(timestamps travel as microseconds since the epoch). On the request path this halved the
client-side cost of reading a row.
"""

import json
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from profile_service.auth import Caller
from profile_service.db import Query

# A profile as JSON: ids as text, timestamps as integer microseconds, null for unset.
Row = dict[str, Any]

_MICROS = "(extract(epoch FROM {0}) * 1000000)::int8"
_AS_JSON = (
    "SELECT json_build_object("
    "'id', id, 'owner_id', owner_id, 'age', age, 'sex', sex, 'height_cm', height_cm, "
    "'weight_kg', weight_kg, 'experience_level', experience_level, "
    "'limitations', limitations, 'primary_goal', primary_goal, "
    "'available_equipment', available_equipment, 'session_length', session_length, "
    "'generation_params', generation_params, "
    f"'created_at', {_MICROS.format('created_at')}, "
    f"'updated_at', {_MICROS.format('updated_at')}, "
    f"'deleted_at', {_MICROS.format('deleted_at')})::text"
)
_GET = _AS_JSON + " FROM profile_api.get_profile(%s, %s, %s)"
# The mask goes as an array literal: psycopg's list dumper costs about 70 us for ten names,
# and the names are Profile field names checked by validation.check_update_mask.
_UPSERT = _AS_JSON + " FROM profile_api.upsert_profile(%s, %s, %s::text[])"
_SOFT_DELETE = _AS_JSON + " FROM profile_api.soft_delete_profile(%s)"
_PURGE = "SELECT profile_api.purge_profiles(%s, %s, %s, %s)"


def _row(cur: psycopg.Cursor[Any]) -> Row | None:
    found = cur.fetchone()
    return json.loads(found[0]) if found else None


def _count(cur: psycopg.Cursor[Any]) -> int:
    found = cur.fetchone()
    return int(found[0]) if found else 0


def get(caller: Caller, owner_id: str) -> Query[Row | None]:
    """The profile of `owner_id` that RLS lets the caller see, if any."""
    return Query(_GET, (caller.role, caller.claims_json, owner_id), _row)


def upsert(caller: Caller, changes: Mapping[str, Any], mask: frozenset[str]) -> Query[Row | None]:
    """Create or update the caller's profile: the `mask` fields take their `changes` values
    (absent: NULL); the others are NULL on create and kept on update."""
    mask_literal = "{" + ",".join(sorted(mask)) + "}"
    return Query(_UPSERT, (caller.claims_json, Jsonb(dict(changes)), mask_literal), _row)


def soft_delete(caller: Caller) -> Query[Row | None]:
    """Soft-delete the caller's own active profile; the row, or None."""
    return Query(_SOFT_DELETE, (caller.claims_json,), _row)


def purge_batch(caller: Caller, retention_days: int, limit: int, dry_run: bool) -> Query[int]:
    """Delete up to `limit` profiles deleted over `retention_days` ago (or count them all)."""
    return Query(_PURGE, (caller.claims_json, retention_days, limit, dry_run), _count)
