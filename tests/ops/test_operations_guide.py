"""docs/operations.md keeps up with the code: settings, metrics and commands it names."""

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
        r"profile-service ((?:migrate|serve|purge|token)(?: --?[\w-]+(?: (?!-)[\w:./-]+)?)*)", text
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
