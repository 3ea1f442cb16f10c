"""The profile's fields, in one table: each field's name, kind and limit.

Validation (validation.py), the proto ↔ row mapping (servicer.py) and the SQL that returns a
row as JSON (repository.py) are derived from it; a unit test holds it equal to the proto's
`Profile` and an integration test to the table's columns. A new field is one line here, plus
the proto, a migration and the README's limits table.
"""

from dataclasses import dataclass
from typing import Any, Literal

# A profile as the domain holds it, by field name: ids as text, timestamps as integer
# microseconds since the epoch, None for unset.
Row = dict[str, Any]
Kind = Literal["int", "text", "text_list", "json", "uuid", "timestamp", "etag"]


@dataclass(frozen=True)
class Field:
    """One field of Profile and column of profile.profiles.

    `low`/`high`: an int's inclusive range; `max_chars`: a text's (or a list item's) length;
    `max_items`: a list's length; `max_bytes`: a JSON value's size as compact JSON.
    `column`: False for an output-only field computed from the row, not stored.
    `sealed`: stored encrypted when PROFILE_ENCRYPTION_KEYS is set (storage/field_cipher.py).
    """

    name: str
    kind: Kind
    writable: bool = True
    column: bool = True
    low: int = 0
    high: int = 0
    max_chars: int = 0
    max_items: int = 0
    max_bytes: int = 0
    sealed: bool = False


FIELDS = (
    Field("id", "uuid", writable=False),
    Field("owner_id", "uuid", writable=False),  # set from the caller's token, never written
    # Plausible human ranges. Age starts at 13, the youngest age of digital consent.
    Field("age", "int", low=13, high=120),
    Field("sex", "text", max_chars=32),
    Field("height_cm", "int", low=50, high=272),
    Field("weight_kg", "int", low=20, high=650),
    Field("experience_level", "text", max_chars=64),
    # Injuries and medical conditions: health data (GDPR Art. 9), sealed at rest.
    Field("limitations", "text", max_chars=2000, sealed=True),
    Field("primary_goal", "text", max_chars=200),
    Field("available_equipment", "text_list", max_items=50, max_chars=100),
    Field("session_length", "text", max_chars=32),
    Field("generation_params", "json", max_bytes=16 * 1024),
    Field("created_at", "timestamp", writable=False),
    Field("updated_at", "timestamp", writable=False),
    Field("deleted_at", "timestamp", writable=False),
    # deleted_at + PURGE_MIN_RETENTION_DAYS while soft-deleted (AIP-164).
    Field("purge_time", "timestamp", writable=False, column=False),
    # A strong entity tag, new after every write (AIP-154): profile_api.etag(id, updated_at).
    Field("etag", "etag", writable=False, column=False),
)
COLUMNS = tuple(f for f in FIELDS if f.column)
BY_NAME = {f.name: f for f in FIELDS}
WRITABLE = tuple(f for f in FIELDS if f.writable)
SEALED = tuple(f.name for f in FIELDS if f.sealed)


def of_kind(kind: Kind) -> tuple[Field, ...]:
    """The fields of one kind, in table order."""
    return tuple(f for f in FIELDS if f.kind == kind)
