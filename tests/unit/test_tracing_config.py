"""Which OTEL_* switches turn tracing on, and a clear refusal when it cannot be."""

import pytest

from profile_service.runtime import config
from profile_service.runtime.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://x@localhost/db", "JWT_SECRET": "s" * 32}
ENDPOINT = "http://collector:4317"


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, ()),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, ("otlp",)),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, ()),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # the SDK's default endpoint
        ({"OTEL_TRACES_EXPORTER": "Console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp, console,otlp"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ()),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        # Only "true" disables (the specification's rule), so a typo leaves tracing on.
        ({"OTEL_SDK_DISABLED": "1", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, ("otlp",)),
        # Other OTEL_* variables are the SDK's; they switch nothing on.
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_off"}, ()),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            ("otlp",),
        ),
    ],
)
def test_switches(env: dict[str, str], exporters: tuple[str, ...]) -> None:
    assert Settings.from_env({**BASE, **env}).tracing_exporters == exporters


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER must be otlp, console"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be grpc",
        ),
    ],
)
def test_what_the_extra_cannot_do_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, **env})


def test_the_console_exporter_needs_no_otlp_protocol() -> None:
    env = {"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    assert Settings.from_env({**BASE, **env}).tracing_exporters == ("console",)


def test_tracing_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "tracing_installed", lambda: False)
    with pytest.raises(ConfigError) as info:
        Settings.from_env({**BASE, "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT})
    assert "OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on" in str(info.value)
    assert "pip install 'profile-service[tracing]'" in str(info.value)
    # Off, the extra is not needed.
    assert Settings.from_env(BASE).tracing_exporters == ()


def test_the_extra_is_found_when_installed() -> None:
    assert config.tracing_installed()
