"""ProfileService over gRPC: proto ↔ model mapping; errors.py says how failures are sent."""

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc.aio
from google.protobuf import struct_pb2

from profile_service import errors
from profile_service.auth.verify import current_caller
from profile_service.domain.fields import FIELDS, Row, of_kind
from profile_service.domain.service import ProfileService
from profile_service.domain.validation import WRITABLE_FIELDS
from profile_service.errors import ServiceError
from profile_service.transport import call_notes
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc

# The field table (fields.py) by how a field crosses between proto and row.
_SCALARS = tuple(f.name for f in FIELDS if f.kind in ("int", "text"))  # `optional` in the proto
_IDS = tuple(f.name for f in of_kind("uuid"))
_LISTS = tuple(f.name for f in of_kind("text_list"))
_JSONS = tuple(f.name for f in of_kind("json"))
_TIMESTAMPS = tuple(f.name for f in of_kind("timestamp") if f.column)
_ETAGS = tuple(f.name for f in of_kind("etag"))
R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class ProfileServicer(pb_grpc.ProfileServiceServicer):
    """Translates requests for ProfileService and its answers; owns no logic of its own."""

    def __init__(self, service: ProfileService, *, purge_min_retention_days: int) -> None:
        self._service = service
        self._retention_days = purge_min_retention_days

    async def Get(self, request: pb.GetRequest, context: Context) -> pb.Profile:
        """See the proto."""
        return await self._profile(
            context,
            lambda deadline: self._service.get(current_caller(), request.owner_id, deadline),
        )

    async def Upsert(self, request: pb.UpsertRequest, context: Context) -> pb.Profile:
        """See the proto."""
        mask = update_mask(request)

        async def upsert(deadline: float | None) -> Row:
            # Only the fields that will be written are read: a huge generation_params outside
            # the mask costs nothing.
            values = values_from_profile(request.profile, mask)
            return await self._service.upsert(
                current_caller(),
                request.profile.owner_id,
                values,
                mask,
                deadline,
                etag=request.profile.etag,
            )

        return await self._profile(context, upsert)

    async def SoftDelete(self, request: pb.SoftDeleteRequest, context: Context) -> pb.Profile:
        """See the proto."""
        return await self._profile(
            context,
            lambda deadline: self._service.soft_delete(
                current_caller(), request.owner_id, deadline, etag=request.etag
            ),
        )

    async def Undelete(self, request: pb.UndeleteRequest, context: Context) -> pb.Profile:
        """See the proto."""
        return await self._profile(
            context,
            lambda deadline: self._service.undelete(
                current_caller(), request.owner_id, deadline, etag=request.etag
            ),
        )

    async def _profile(
        self, context: Context, use_case: Callable[[float | None], Awaitable[Row]]
    ) -> pb.Profile:
        """The Profile answer of a use case that returns one row."""
        return profile_from_row(await _call(context, use_case), self._retention_days)

    async def BatchGetProfiles(
        self, request: pb.BatchGetProfilesRequest, context: Context
    ) -> pb.BatchGetProfilesResponse:
        """See the proto."""
        rows = await _call(
            context,
            lambda deadline: self._service.batch_get(
                current_caller(), list(request.owner_ids), deadline
            ),
        )
        return pb.BatchGetProfilesResponse(
            profiles=[profile_from_row(row, self._retention_days) for row in rows]
        )

    async def Purge(self, request: pb.PurgeRequest, context: Context) -> pb.PurgeResponse:
        """See the proto."""
        count = await _call(
            context,
            lambda deadline: self._service.purge(
                current_caller(),
                request.retention_days,
                request.dry_run,
                request.batch_size,
                deadline,
                should_continue=lambda: not context.cancelled(),
            ),
        )
        return pb.PurgeResponse(purge_count=count)


FULL_REPLACEMENT = "*"


def update_mask(request: pb.UpsertRequest) -> frozenset[str]:
    """The fields an Upsert writes (AIP-134). Its update_mask's paths; with none, the fields
    the request populates (a partial message never wipes the rest); `*`, every writable field
    (unset ones become null). Paths are checked by validation, `*` mixed with others too."""
    paths = frozenset(request.update_mask.paths)
    if paths == {FULL_REPLACEMENT}:
        return frozenset(WRITABLE_FIELDS)
    if paths:
        return paths
    profile = request.profile
    return frozenset(
        [name for name in (*_SCALARS, *_JSONS) if profile.HasField(name)]  # type: ignore[arg-type]
        + [name for name in _LISTS if getattr(profile, name)]
    )


def values_from_profile(
    profile: pb.Profile, names: frozenset[str] = frozenset(WRITABLE_FIELDS)
) -> dict[str, Any]:
    """The writable fields `names` of a Profile message as column values (None for unset);
    names that are not writable fields are skipped (validation reports them)."""
    values: dict[str, Any] = {
        name: getattr(profile, name) if profile.HasField(name) else None  # type: ignore[arg-type]
        for name in _SCALARS
        if name in names
    }
    for name in _LISTS:
        if name in names:
            values[name] = list(getattr(profile, name)) or None
    for name in _JSONS:
        if name in names:
            values[name] = _plain(getattr(profile, name)) if profile.HasField(name) else None  # type: ignore[arg-type]
    return values


def _plain(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct's content as dicts, lists and scalars.

    Not json_format.MessageToDict: it raises on NaN and infinity, before validation can name
    the offending key together with every other fault (and only if the field is being written).
    """
    return {key: _plain_value(value) for key, value in struct.fields.items()}


def _plain_value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return _plain(value.struct_value)
    if kind == "list_value":
        return [_plain_value(item) for item in value.list_value.values]
    if kind is None or kind == "null_value":  # a Value with nothing set reads as null
        return None
    return getattr(value, kind)


def profile_from_row(row: Row, retention_days: int) -> pb.Profile:
    """A Profile message from a profile row as repository.py returns it; a soft-deleted one's
    purge_time is `retention_days` after its deleted_at."""
    values: dict[str, Any] = {name: row[name] for name in _SCALARS if row[name] is not None}
    for name in (*_IDS, *_ETAGS):
        values[name] = row[name]
    for name in _LISTS:
        values[name] = row[name] or ()
    for name in _TIMESTAMPS:
        micros = row[name]
        if micros is not None:
            seconds, rest = divmod(micros, 1_000_000)
            values[name] = {"seconds": seconds, "nanos": rest * 1000}
    if "deleted_at" in values:
        deleted = values["deleted_at"]
        values["purge_time"] = {**deleted, "seconds": deleted["seconds"] + retention_days * 86400}
    profile = pb.Profile(**values)
    for name in _JSONS:
        if row[name] is not None:
            getattr(profile, name).update(row[name])
    return profile


async def _call(context: Context, use_case: Callable[[float | None], Awaitable[R]]) -> R:
    """Run a use case with the call's deadline; a ServiceError ends the call with its status
    (errors.py); anything else is a bug, answered INTERNAL by internal_errors.py."""
    remaining = context.time_remaining()
    deadline = None if remaining is None else time.monotonic() + remaining
    try:
        return await use_case(deadline)
    except ServiceError as exc:
        _note_sqlstate(exc)
        await errors.abort(context, exc)


def _note_sqlstate(exc: Exception) -> None:
    """Put the SQLSTATE of the database error behind `exc`, if any, on the call's log line:
    operators see why (disk full, read-only) and never the error's text, which may hold data."""
    # Read off the cause without importing psycopg here: the transport knows no driver.
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        call_notes.note("sqlstate", sqlstate)
