"""The SQL for profiles: one call of a `profile_api` function per use case (migration 0002).

Statements only, fixed text (db.py prepares each once per connection), no authorization
decisions: the functions run as the caller's role under row-level security.

Rows come back as one JSON text column built by PostgreSQL, as PostgREST does: Python parses
one JSON text and builds no UUID or datetime objects (timestamps travel as microseconds since
the epoch). On the request path this halved the client-side cost of reading a row.
"""

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from psycopg_pool import AsyncConnectionPool

from profile_service.domain.caller import Caller
from profile_service.domain.fields import COLUMNS, SEALED, Field, Row
from profile_service.errors import Internal, Reason
from profile_service.storage import db
from profile_service.storage.db import Query, Statement, Value
from profile_service.storage.field_cipher import FieldCipher, Undecryptable, is_sealed

T = TypeVar("T")
_LOGGER = logging.getLogger(__name__)


def _as_json(field: Field) -> str:
    if field.kind == "timestamp":
        return f"'{field.name}', (extract(epoch FROM {field.name}) * 1000000)::int8"
    return f"'{field.name}', {field.name}"


# Every field of the table (fields.py), by name; the names are fixed identifiers, not input.
_OBJECT = (
    f"json_build_object({', '.join(_as_json(f) for f in COLUMNS)}, "
    "'etag', profile_api.etag(id, updated_at))"
)
_AS_JSON = f"SELECT {_OBJECT}::text"
# Many rows as one value, so that a batch is still one row of one column: one round trip.
_AS_JSON_LIST = f"SELECT coalesce(json_agg({_OBJECT}), '[]')::text"
# Parameters are sent as text of unknown type: PostgreSQL takes their types from the function.
GET = Statement(
    "profile_get",
    _AS_JSON + " FROM profile_api.get_profile($1, $2, $3)",
    ("role", "claims", "owner_id"),
)
# Writes end with the call's commit_by (migration 0005): the database refuses to commit later.
# ...and the etag they require ('': none; migration 0007), checked in the same statement.
UPSERT = Statement(
    "profile_upsert",
    _AS_JSON + " FROM profile_api.upsert_profile($1, $2, $3, $4, $5)",
    ("claims", "changes", "mask", "commit_by", "etag"),
    writes=True,
)
SOFT_DELETE = Statement(
    "profile_soft_delete",
    _AS_JSON + " FROM profile_api.soft_delete_profile($1, $2, $3)",
    ("claims", "commit_by", "etag"),
    writes=True,
)
UNDELETE = Statement(
    "profile_undelete",
    _AS_JSON + " FROM profile_api.undelete_profile($1, $2, $3, $4, $5)",
    ("role", "claims", "owner_id", "commit_by", "etag"),
    writes=True,
)
BATCH_GET = Statement(
    "profile_batch_get",
    _AS_JSON_LIST + " FROM profile_api.batch_get_profiles($1, $2, $3)",
    ("role", "claims", "owner_ids"),
)
PURGE = Statement(
    "profile_purge",
    "SELECT profile_api.purge_profiles($1, $2, $3, $4, $5)",
    ("claims", "retention_days", "limit", "dry_run", "commit_by"),
    writes=True,
)
STATEMENTS = (GET, UPSERT, SOFT_DELETE, UNDELETE, BATCH_GET, PURGE)


def create_pool(
    conninfo: str, *, size: int, prepare: bool = True, timeout_ms: int = 5000
) -> AsyncConnectionPool:
    """A closed pool for the profile statements (db.create_pool with `STATEMENTS`)."""
    return db.create_pool(
        conninfo, size=size, prepare=prepare, statements=STATEMENTS, timeout_ms=timeout_ms
    )


def _row(value: Value) -> Row | None:
    # Decoded first: json.loads would otherwise sniff the bytes' encoding (a third slower).
    return None if value is None else json.loads(value.decode())


def _rows(value: Value) -> list[Row]:
    return [] if value is None else list(json.loads(value.decode()))


def _count(value: Value) -> int:
    return 0 if value is None else int(value)


class Runner(Protocol):
    """Runs one query within a call's deadline (store.py's ProfileStore)."""

    async def run(self, query_for: Callable[[float], Query[T]], deadline: float | None) -> T:
        """Run the query made for the call's commit_by (seconds since the epoch)."""
        ...


class ProfileRepository:
    """The profiles as the use cases ask for them (service.Profiles): each method one
    statement, run by `runner` within the call's `deadline` (time.monotonic(); None: none).

    The sealed fields (fields.SEALED) are sealed by `cipher` on the way in and opened on the
    way out: above this class they are plaintext."""

    def __init__(self, runner: Runner, cipher: FieldCipher | None = None) -> None:
        self._run = runner.run
        self._cipher = cipher or FieldCipher(())

    async def get(self, caller: Caller, owner_id: str, deadline: float | None) -> Row | None:
        """The profile of `owner_id` that RLS lets the caller see, if any."""
        query = Query(GET, (caller.role, caller.claims_json, owner_id), _row)
        return self._opened(await self._run(lambda _: query, deadline))

    async def batch_get(
        self, caller: Caller, owner_ids: list[str], deadline: float | None
    ) -> list[Row]:
        """The profiles of `owner_ids` that RLS lets the caller see, in no particular order."""
        # An array literal: the ids are UUIDs checked by validation.
        ids = "{" + ",".join(owner_ids) + "}"
        query = Query(BATCH_GET, (caller.role, caller.claims_json, ids), _rows)
        rows = await self._run(lambda _: query, deadline)
        for row in rows:
            self._opened(row)
        return rows

    async def upsert(
        self,
        caller: Caller,
        changes: Mapping[str, Any],
        mask: frozenset[str],
        etag: str,
        deadline: float | None,
    ) -> Row | None:
        """Create or update the caller's profile: the `mask` fields take their `changes` values
        (absent: NULL); the others are NULL on create and kept on update. Only if the profile
        has `etag` (empty: any); nothing is committed after the call's deadline."""
        # An array literal: the names are Profile field names checked by validation.
        mask_literal = "{" + ",".join(sorted(mask)) + "}"
        changes_json = json.dumps(self._sealed(caller, changes))
        params = (caller.claims_json, changes_json, mask_literal)
        return await self._write_row(UPSERT, params, etag, deadline)

    async def soft_delete(self, caller: Caller, etag: str, deadline: float | None) -> Row | None:
        """Soft-delete the caller's own active profile, if it has `etag` (empty: any); the row,
        or None."""
        return await self._write_row(SOFT_DELETE, (caller.claims_json,), etag, deadline)

    async def undelete(
        self, caller: Caller, owner_id: str, etag: str, deadline: float | None
    ) -> Row | None:
        """Make `owner_id`'s soft-deleted profile active again, if it has `etag` (empty: any);
        the row, or None (absent or purged)."""
        params = (caller.role, caller.claims_json, owner_id)
        return await self._write_row(UNDELETE, params, etag, deadline)

    async def purge_batch(
        self,
        caller: Caller,
        retention_days: int,
        limit: int,
        dry_run: bool,
        deadline: float | None,
    ) -> int:
        """Delete up to `limit` profiles deleted over `retention_days` ago (or, with
        `dry_run`, count them all)."""
        flag = "true" if dry_run else "false"
        params = (caller.claims_json, str(retention_days), str(limit), flag)
        return await self._run(
            lambda commit_by: Query(PURGE, (*params, repr(commit_by)), _count), deadline
        )

    async def _write_row(
        self, statement: Statement, params: tuple[str, ...], etag: str, deadline: float | None
    ) -> Row | None:
        """Run a write of one row: `params`, then the call's commit_by and `etag`, as every
        write statement ends (migrations 0005 and 0007); the row, opened, or None."""
        row = await self._run(
            lambda commit_by: Query(statement, (*params, repr(commit_by), etag), _row), deadline
        )
        return self._opened(row)

    def _sealed(self, caller: Caller, changes: Mapping[str, Any]) -> Mapping[str, Any]:
        """`changes` as stored: the sealed fields among them sealed for the caller's row."""
        if not self._cipher.seals:
            return changes
        assert caller.sub is not None  # only users write (service.upsert)
        sealed = dict(changes)
        for name in SEALED:
            if sealed.get(name) is not None:
                sealed[name] = self._cipher.seal(name, caller.sub, sealed[name])
        return sealed

    def _opened(self, row: Row | None) -> Row | None:
        """`row` with its sealed fields opened; a field that cannot be opened fails the call
        (INTERNAL), logged with the key's name and the profile's id, never the data."""
        if row is None:
            return None
        for name in SEALED:
            stored = row[name]
            if stored is not None and is_sealed(stored):
                try:
                    row[name] = self._cipher.open(name, row["owner_id"], stored)
                except Undecryptable as exc:
                    _LOGGER.error(
                        "profile %s: field %s cannot be decrypted (%s)", row["id"], name, exc
                    )
                    raise Internal(
                        f"the profile's {name} cannot be decrypted", Reason.UNDECRYPTABLE_FIELD
                    ) from None
        return row
