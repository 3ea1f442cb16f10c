"""The README's layout table names every module and package of the service and every top-level
folder."""

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_module_and_folder_is_in_the_layout() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") : readme.index("## API")]
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
