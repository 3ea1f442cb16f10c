"""docs/operations.md keeps up with the code: settings, metrics and commands it names."""

import ast
import re

from profile_service.runtime.cli import build_parser
from tests.ops.conftest import REPO_ROOT, find

GUIDE = REPO_ROOT / "docs" / "operations.md"
_PACKAGE = REPO_ROOT / "profile_service"


def _guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def _settings_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for path in _PACKAGE.rglob("*.py"):
        if "v1" in path.relative_to(_PACKAGE).parts:  # generated
            continue
        source = path.read_text(encoding="utf-8")
        names |= set(re.findall(r"reader\.\w+\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
        names |= set(re.findall(r"environ\.get\(\s*[\"']([A-Z][A-Z0-9_]+)[\"']", source))
    return names


def test_the_guide_names_every_setting_the_server_reads() -> None:
    names = _settings_read_by_the_code()
    assert {"DATABASE_URL", "JWT_SECRET", "GRPC_PORT", "LOG_LEVEL"} <= names
    missing = sorted(n for n in names if f"`{n}`" not in _guide())
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_the_guide_names_every_config_map_key() -> None:
    data = find("ConfigMap", "profile-service")["data"]
    missing = sorted(key for key in data if f"`{key}`" not in _guide())
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_the_guide_names_every_metric_the_server_exports() -> None:
    metrics_module = _PACKAGE / "runtime" / "metrics.py"
    assert metrics_module.is_file(), "profile_service/runtime/metrics.py is missing"
    declared = re.findall(
        r"(Counter|Gauge|Histogram|Summary)\(\s*\"(\w+)\"",
        metrics_module.read_text(encoding="utf-8"),
    )
    assert declared
    # prometheus_client exposes a counter `x` as `x_total`.
    exported = {name + "_total" if kind == "Counter" else name for kind, name in declared}
    missing = sorted(name for name in exported if f"`{name}`" not in _guide())
    assert not missing, f"docs/operations.md does not mention {missing}"


def test_every_profile_service_command_in_the_guide_parses() -> None:
    text = re.sub(r"\\\n\s*", " ", _guide())  # join shell continuation lines
    commands = re.findall(
        r"profile-service ((?:migrate|serve|purge|reencrypt|token)"
        r"(?: --?[\w-]+(?: (?!-)[\w:./-]+)?)*)",
        text,
    )
    assert any(c.startswith("purge --target") for c in commands), commands
    assert any(c.startswith("token --role service_role") for c in commands), commands
    for command in commands:
        build_parser().parse_args(command.rstrip(")").split())  # SystemExit on a bad flag


def test_the_guide_states_the_transport_limits_the_code_enforces() -> None:
    from profile_service.domain import validation
    from profile_service.runtime import memory
    from profile_service.transport import server, unfinished

    section = _guide().split("## 12. Transport limits", 1)[1]
    stated = {
        f"{server.MAX_STREAMS_PER_CONNECTION} (`server.MAX_STREAMS_PER_CONNECTION`)",
        f"{server.STREAM_WINDOW_BYTES // 1024} KiB (`server.STREAM_WINDOW_BYTES`",
        f"{validation.MAX_REQUEST_BYTES // 1024} KiB once decompressed",
        f"{unfinished.UNFINISHED_SECONDS:g} s (`unfinished.UNFINISHED_SECONDS`)",
        f"{unfinished.MAX_UNFINISHED} (`unfinished.MAX_UNFINISHED`)",
        f"`{unfinished.REASON}`",
        f"within {memory.TRIM_SECONDS:g} s",
    }
    missing = sorted(fact for fact in stated if fact not in section)
    assert not missing, f"docs/operations.md, section 12, does not state {missing}"


def _defaults_in_the_code() -> dict[str, object]:
    """Each setting's default as config.py gives it to its reader: reader.integer("NAME", 16, …)."""
    source = (_PACKAGE / "runtime" / "config.py").read_text(encoding="utf-8")
    defaults: dict[str, object] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if getattr(node.func.value, "id", "") != "reader" or len(node.args) < 2:
            continue
        if node.func.attr not in ("integer", "number", "boolean", "choice"):
            continue  # reader.fault("NAME", why) and the like: no default
        name, default = node.args[0], node.args[1]
        if isinstance(name, ast.Constant) and isinstance(default, ast.Constant):
            defaults[str(name.value)] = default.value
    return defaults


def _defaults_in_the_guide() -> dict[str, str]:
    rows = {}
    for line in _guide().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
                rows[name] = cells[1]
    return rows


def test_the_guide_states_each_setting_s_default_as_the_code_has_it() -> None:
    code, guide = _defaults_in_the_code(), _defaults_in_the_guide()
    assert len(code) >= 10
    for name, default in code.items():
        if isinstance(default, bool):
            expected = "true" if default else "false"
        elif isinstance(default, float) and default.is_integer():
            expected = str(int(default))
        else:
            expected = str(default)
        stated = guide.get(name, "")
        assert stated.lower().startswith(expected.lower()), (name, stated, expected)
