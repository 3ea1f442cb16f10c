"""The decision records (docs/decisions/): one decision each, in Context / Decision /
Consequences form, numbered as their files are."""

import re
from pathlib import Path

import pytest

RECORDS = sorted((Path(__file__).parents[2] / "docs" / "decisions").glob("*.md"))


def test_the_records_are_numbered_one_after_another() -> None:
    numbers = [int(p.name[:4]) for p in RECORDS]
    assert numbers == list(range(1, len(RECORDS) + 1))


@pytest.mark.parametrize("record", RECORDS, ids=[p.stem for p in RECORDS])
def test_each_record_is_one_decision_in_context_decision_consequences_form(record: Path) -> None:
    text = record.read_text(encoding="utf-8")
    title = text.splitlines()[0]
    assert title.startswith(f"# {int(record.name[:4])}. "), title
    assert re.search(r"^Status: ", text, re.M), "no Status line"
    sections = re.findall(r"^## (.+)$", text, re.M)
    assert sections == ["Context", "Decision", "Consequences"], sections
