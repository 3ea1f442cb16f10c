"""The reasons a failed call carries exist once, in errors.Reason with their classes in
errors.REASON_CLASSES: the README's error table and every use in the code agree with them."""

import ast
import re
from pathlib import Path

from profile_service import errors
from profile_service.errors import REASON_CLASSES, Reason

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "profile_service"
_ROW = re.compile(r"^\|.*\| `([A-Z_]+)`[^|]*\| `([A-Z_]+)` \|$")


def _readme_table() -> dict[str, str]:
    """The README's error table: reason → status."""
    rows = [_ROW.match(line) for line in (ROOT / "README.md").read_text().splitlines()]
    return {m.group(2): m.group(1) for m in rows if m}


def test_every_reason_has_a_class_and_the_readme_lists_each_with_its_status() -> None:
    assert set(REASON_CLASSES) == set(Reason)
    expected = {reason.value: cls.code.name for reason, cls in REASON_CLASSES.items()}
    assert _readme_table() == expected


def _modules() -> list[Path]:
    modules = [p for p in PACKAGE.rglob("*.py") if "v1" not in p.parts and p.name != "errors.py"]
    assert len(modules) > 30, "the service's modules are not where this test looks"
    return modules


def test_no_module_spells_a_reason_out_instead_of_naming_it() -> None:
    values = {r.value for r in Reason}
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.value}"
        for path in _modules()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in values
    ]
    assert spelled == []


def test_each_error_raised_with_a_reason_is_of_that_reason_s_class() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, errors.ServiceError)
    }
    wrong = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id not in classes:
                continue
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(arg, ast.Attribute) and getattr(arg.value, "id", "") == "Reason":
                    expected = REASON_CLASSES[Reason[arg.attr]].__name__
                    if node.func.id != expected:
                        wrong.append(f"{path.name}:{node.lineno} {node.func.id}({arg.attr})")
    assert wrong == []
