"""Input checks. Each fault names the field, as google.rpc.BadRequest wants.

The fields' limits are in fields.py (documented in the proto comments and the README's limits
table); the request-level ones are here.
"""

import json
import math
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from profile_service.domain import fields
from profile_service.domain.fields import Field
from profile_service.domain.retention import PURGE_MAX_RETENTION_DAYS
from profile_service.errors import FieldViolation

# Views of the field table, by what they limit.
INT_RANGES = {f.name: (f.low, f.high) for f in fields.of_kind("int")}
TEXT_LIMITS = {f.name: f.max_chars for f in fields.of_kind("text")}
EQUIPMENT_MAX_ITEMS = fields.BY_NAME["available_equipment"].max_items
EQUIPMENT_ITEM_MAX_CHARS = fields.BY_NAME["available_equipment"].max_chars
GENERATION_PARAMS_MAX_BYTES = fields.BY_NAME["generation_params"].max_bytes
# The largest request gRPC accepts, compressed or not, before any handler or token check runs.
# The largest valid request is an Upsert with every field at its limit in 4-byte characters and
# generation_params at its worst protobuf encoding (a list of zeros: 11 bytes for the 4 of
# "0.0,"): about 73 KiB (tests/e2e/test_request_size.py builds it).
MAX_REQUEST_BYTES = 88 * 1024

WRITABLE_FIELDS = tuple(f.name for f in fields.WRITABLE)
# owner_id is neither: not writable, and not ignored either (it names whose profile).
OUTPUT_ONLY_FIELDS = frozenset(f.name for f in fields.FIELDS if not f.writable) - {"owner_id"}
PURGE_MAX_BATCH = 10_000
# Purge's rows per transaction when the call says 0.
DEFAULT_PURGE_BATCH = 1000
# What an error may echo of the caller's input (a mask path, a JSON key): gRPC refuses
# trailers over 16 KiB, and the caller would get RESOURCE_EXHAUSTED (errors.py).
ECHO_MAX_CHARS = 64


def shown(text: str) -> str:
    """`text` as an error may echo it: at most ECHO_MAX_CHARS, printable."""
    cut = text[:ECHO_MAX_CHARS] + ("…" if len(text) > ECHO_MAX_CHARS else "")
    return cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut


def check_owner_id(value: str, field: str) -> list[FieldViolation]:
    """An owner_id, when given, must be a UUID."""
    if value and not is_uuid(value):
        return [FieldViolation(field, "must be a UUID")]
    return []


BATCH_MAX_IDS = 1000


def check_owner_ids(owner_ids: list[str]) -> list[FieldViolation]:
    """A batch names 1 to BATCH_MAX_IDS owners, each a UUID (duplicates allowed)."""
    if not 1 <= len(owner_ids) <= BATCH_MAX_IDS:
        return [FieldViolation("owner_ids", f"must name 1 to {BATCH_MAX_IDS} owners")]
    return [
        FieldViolation(f"owner_ids[{i}]", "must be a UUID")
        for i, owner in enumerate(owner_ids)
        if not is_uuid(owner)
    ]


def check_update_mask(paths: Iterable[str]) -> list[FieldViolation]:
    """Mask paths must name writable fields of Profile."""
    faults = []
    for path in paths:
        if path == "*":
            faults.append(FieldViolation("update_mask", "'*' must be the only path"))
        elif path in OUTPUT_ONLY_FIELDS or path == "owner_id":
            faults.append(FieldViolation("update_mask", f"{path!r} cannot be written"))
        elif path not in WRITABLE_FIELDS:
            faults.append(
                FieldViolation("update_mask", f"'{shown(path)}' is not a field of Profile")
            )
    return faults


def check_fields(values: Mapping[str, Any], prefix: str = "profile.") -> list[FieldViolation]:
    """Check writable field values (None means unset); return every violation."""
    faults: list[FieldViolation] = []
    for field in fields.WRITABLE:
        value = values.get(field.name)
        if value is not None:
            faults += _CHECKS[field.kind](prefix + field.name, value, field)
    return faults


def _check_int(path: str, number: int, field: Field) -> list[FieldViolation]:
    if not field.low <= number <= field.high:
        return [FieldViolation(path, f"must be between {field.low} and {field.high}")]
    return []


def _check_list(path: str, items: list[str], field: Field) -> list[FieldViolation]:
    if len(items) > field.max_items:
        return [FieldViolation(path, f"must have at most {field.max_items} items")]
    faults = []
    for i, item in enumerate(items):
        if not item:
            faults.append(FieldViolation(f"{path}[{i}]", "must not be empty"))
        faults += _check_text(f"{path}[{i}]", item, field)
    return faults


def check_purge(retention_days: int, batch_size: int, min_retention: int) -> list[FieldViolation]:
    """Purge retention (0 = default) must not go below the minimum; batch size in range."""
    faults = []
    if retention_days and not min_retention <= retention_days <= PURGE_MAX_RETENTION_DAYS:
        faults.append(
            FieldViolation(
                "retention_days",
                f"must be between {min_retention} and {PURGE_MAX_RETENTION_DAYS} (0 = default)",
            )
        )
    if not 0 <= batch_size <= PURGE_MAX_BATCH:
        faults.append(
            FieldViolation("batch_size", f"must be between 1 and {PURGE_MAX_BATCH} (0 = default)")
        )
    return faults


# Unicode's noncharacters U+FDD0..U+FDEF, "for internal use": never in what a caller writes,
# so storage may mark its own values with one (a sealed field starts with U+FDD0).
_NONCHARACTERS = re.compile("[\ufdd0-\ufdef]")


def _check_text(path: str, text: str, field: Field) -> list[FieldViolation]:
    if "\x00" in text:
        return [FieldViolation(path, "must not contain NUL characters")]
    if _NONCHARACTERS.search(text):
        return [FieldViolation(path, "must not contain Unicode noncharacters (U+FDD0..U+FDEF)")]
    if len(text) > field.max_chars:
        return [FieldViolation(path, f"must be at most {field.max_chars} characters")]
    return []


def _check_json(path: str, params: Mapping[str, Any], field: Field) -> list[FieldViolation]:
    faults = []
    for where, value in _walk(params, path):
        if isinstance(value, str) and "\x00" in value:
            faults.append(FieldViolation(where, "must not contain NUL characters"))
        elif isinstance(value, float) and not math.isfinite(value):
            faults.append(FieldViolation(where, "must be a finite number"))
    if faults:  # json.dumps would refuse the non-finite numbers
        return faults
    size = len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode())
    if size > field.max_bytes:
        return [FieldViolation(path, f"must be at most {field.max_bytes} bytes as JSON")]
    return []


_CHECKS: dict[str, Callable[[str, Any, Field], list[FieldViolation]]] = {
    "int": _check_int,
    "text": _check_text,
    "text_list": _check_list,
    "json": _check_json,
}


def _walk(value: Any, path: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}.{shown(key)}", key
            yield from _walk(item, f"{path}.{shown(key)}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, value


def is_uuid(value: object) -> bool:
    """True for a UUID in its canonical hyphenated form (what PostgreSQL's ::uuid accepts)."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False
