"""The repository itself: nothing large is tracked (npm's buf binaries, 93 MB, once were)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
MAX_TRACKED_BYTES = 1024 * 1024


def test_no_tracked_file_is_over_a_megabyte() -> None:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")  # an unpacked sdist: nothing is tracked there
    paths = [ROOT / p.decode() for p in listed.stdout.split(b"\0") if p]
    assert paths, "git lists no file"
    large = {str(p.relative_to(ROOT)): p.stat().st_size for p in paths if p.is_file()}
    assert {p: size for p, size in large.items() if size > MAX_TRACKED_BYTES} == {}
