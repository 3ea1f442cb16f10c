"""Input limits and checks. Each fault names the field, as google.rpc.BadRequest wants.

The limits are documented in the proto comments and the README; change them together.
"""

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from profile_service.errors import FieldViolation

# Plausible human ranges (inclusive). Age starts at 13, the youngest age of digital consent.
INT_RANGES = {"age": (13, 120), "height_cm": (50, 272), "weight_kg": (20, 650)}
TEXT_LIMITS = {
    "sex": 32,
    "experience_level": 64,
    "limitations": 2000,
    "primary_goal": 200,
    "session_length": 32,
}
EQUIPMENT_MAX_ITEMS = 50
EQUIPMENT_ITEM_MAX_CHARS = 100
GENERATION_PARAMS_MAX_BYTES = 16 * 1024
# The largest request gRPC accepts, compressed or not, before any handler or token check runs.
# The largest valid request is an Upsert with every field at its limit in 4-byte characters and
# generation_params at its worst protobuf encoding (a list of zeros: 11 bytes for the 4 of
# "0.0,"): about 73 KiB (tests/e2e/test_request_size.py builds it).
MAX_REQUEST_BYTES = 88 * 1024

WRITABLE_FIELDS = (*INT_RANGES, *TEXT_LIMITS, "available_equipment", "generation_params")
OUTPUT_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at", "deleted_at"})
PURGE_MAX_BATCH = 10_000
# A century: beyond some such bound `now() - interval` leaves PostgreSQL's timestamp range.
PURGE_MAX_RETENTION_DAYS = 36_500
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


def check_update_mask(paths: Iterable[str]) -> list[FieldViolation]:
    """Mask paths must name writable fields of Profile."""
    faults = []
    for path in paths:
        if path in OUTPUT_ONLY_FIELDS or path == "owner_id":
            faults.append(FieldViolation("update_mask", f"{path!r} cannot be written"))
        elif path not in WRITABLE_FIELDS:
            faults.append(
                FieldViolation("update_mask", f"'{shown(path)}' is not a field of Profile")
            )
    return faults


def check_fields(values: Mapping[str, Any], prefix: str = "profile.") -> list[FieldViolation]:
    """Check writable field values (None means unset); return every violation."""
    faults: list[FieldViolation] = []
    for name, (low, high) in INT_RANGES.items():
        number = values.get(name)
        if number is not None and not low <= number <= high:
            faults.append(FieldViolation(prefix + name, f"must be between {low} and {high}"))
    for name, limit in TEXT_LIMITS.items():
        text = values.get(name)
        if text is not None:
            faults += _check_text(prefix + name, text, limit)
    equipment = values.get("available_equipment") or []
    if len(equipment) > EQUIPMENT_MAX_ITEMS:
        faults.append(
            FieldViolation(
                prefix + "available_equipment", f"must have at most {EQUIPMENT_MAX_ITEMS} items"
            )
        )
    else:
        for i, item in enumerate(equipment):
            path = f"{prefix}available_equipment[{i}]"
            if not item:
                faults.append(FieldViolation(path, "must not be empty"))
            faults += _check_text(path, item, EQUIPMENT_ITEM_MAX_CHARS)
    params = values.get("generation_params")
    if params is not None:
        faults += _check_json(prefix + "generation_params", params)
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


def _check_text(path: str, text: str, limit: int) -> list[FieldViolation]:
    if "\x00" in text:
        return [FieldViolation(path, "must not contain NUL characters")]
    if len(text) > limit:
        return [FieldViolation(path, f"must be at most {limit} characters")]
    return []


def _check_json(path: str, params: Mapping[str, Any]) -> list[FieldViolation]:
    faults = []
    for where, value in _walk(params, path):
        if isinstance(value, str) and "\x00" in value:
            faults.append(FieldViolation(where, "must not contain NUL characters"))
        elif isinstance(value, float) and not math.isfinite(value):
            faults.append(FieldViolation(where, "must be a finite number"))
    if faults:  # json.dumps would refuse the non-finite numbers
        return faults
    size = len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode())
    if size > GENERATION_PARAMS_MAX_BYTES:
        return [
            FieldViolation(path, f"must be at most {GENERATION_PARAMS_MAX_BYTES} bytes as JSON")
        ]
    return []


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
