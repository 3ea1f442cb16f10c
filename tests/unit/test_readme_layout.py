"""docs/architecture.md's layout table names every module and package of the service and every
top-level folder; the README stays short."""

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_module_and_folder_is_in_the_layout() -> None:
    guide = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    layout = guide[guide.index("## Layout") : guide.index("## Database")]
    package = ROOT / "profile_service"
    rooms = [p for p in package.iterdir() if (p / "__init__.py").exists() and p.name != "v1"]
    # Every module by name, in its room's row (the client's are its own business).
    modules = sorted(
        p.name
        for p in [*package.glob("*.py"), *(m for r in rooms for m in r.glob("*.py"))]
        if p.name not in ("__init__.py", "__main__.py") and p.parent.name != "client"
    )
    packages = sorted(f"{p.name}/" for p in rooms)
    folders = [
        *packages,
        "protos/",
        "migrations/",
        "devtools/",
        "tests/",
        "deploy/k8s/",
        "docs/",
        "bench/",
    ]
    missing = [name for name in [*modules, *folders] if name not in layout]
    assert missing == []


def test_the_readme_stays_short_for_its_users() -> None:
    """Design and internals go to docs/architecture.md and the decision records."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
