"""The README's layout table names every module and package of the service and every top-level
folder."""

from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_module_and_folder_is_in_the_layout() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout") : readme.index("## API")]
    modules = sorted(
        p.name
        for p in (ROOT / "profile_service").glob("*.py")
        if p.name not in ("__init__.py", "__main__.py")
    )
    packages = sorted(
        f"{p.name}/" for p in (ROOT / "profile_service").iterdir() if (p / "__init__.py").exists()
    )
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
