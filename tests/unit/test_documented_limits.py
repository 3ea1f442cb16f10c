"""The limits and RPCs the README states are the code's own (fields.FIELDS, the purge and batch
bounds, the proto's RPCs): written once in the code, every mention held to it here."""

import re
from pathlib import Path

from profile_service.domain.fields import FIELDS, Field
from profile_service.domain.retention import DATABASE_PURGE_FLOOR_DAYS
from profile_service.domain.validation import BATCH_MAX_IDS, DEFAULT_PURGE_BATCH, PURGE_MAX_BATCH
from profile_service.v1 import profile_service_pb2 as pb

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _limits() -> dict[str, str]:
    """The README's input-limits table: field → limit text (a row naming several, each)."""
    table = README[README.index("### Input limits") : README.index("### A grpcurl session")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2:
            for name in re.findall(r"`([a-z_.A-Z]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def _expected(f: Field) -> str:
    if f.kind == "int":
        return f"{f.low} to {f.high}"
    if f.kind == "text":
        return f"at most {f.max_chars} characters"
    if f.kind == "text_list":
        return f"at most {f.max_items} items, each 1 to {f.max_chars} characters"
    return f"at most {f.max_bytes // 1024} KiB as compact JSON"


def test_every_writable_field_s_limit_in_the_readme_is_the_field_table_s() -> None:
    limits = _limits()
    for field in FIELDS:
        if not field.writable:
            continue
        assert field.name in limits, f"{field.name} has no row in the README's limits table"
        assert limits[field.name].startswith(_expected(field)), (field.name, limits[field.name])


def test_the_purge_and_batch_bounds_in_the_readme_are_the_code_s() -> None:
    limits = _limits()
    assert limits["Purge.batch_size"] == f"1 to {PURGE_MAX_BATCH} (0 = {DEFAULT_PURGE_BATCH})"
    assert f"1 to {BATCH_MAX_IDS} owners" in README
    assert f"over {BATCH_MAX_IDS} or a non-UUID" in README
    operations = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"| `PURGE_MIN_RETENTION_DAYS` | {DATABASE_PURGE_FLOOR_DAYS} |" in operations


def test_the_readme_s_rpc_table_has_a_row_per_rpc_of_the_proto_in_its_order() -> None:
    service = pb.DESCRIPTOR.services_by_name["ProfileService"]
    rows = re.findall(r"^\| `(\w+)\(", README, re.M)
    assert rows == [method.name for method in service.methods]
