"""Settings from the environment: defaults, and one clear message per bad value."""

import pytest

from profile_service.config import ConfigError, Settings

BASE = {"DATABASE_URL": "postgresql://x@localhost/db", "JWT_SECRET": "s" * 32}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.grpc_port == 50051
    assert settings.purge_min_retention_days == 30
    assert settings.jwt_algorithm == "HS256"
    assert settings.jwt_audience is None


def test_purge_minimum_may_be_raised() -> None:
    assert (
        Settings.from_env({**BASE, "PURGE_MIN_RETENTION_DAYS": "45"}).purge_min_retention_days == 45
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DATABASE_URL": ""}, "DATABASE_URL is required"),
        ({"JWT_SECRET": ""}, "JWT_SECRET is required"),
        ({"PURGE_MIN_RETENTION_DAYS": "29"}, "PURGE_MIN_RETENTION_DAYS must be at least 30"),
        ({"GRPC_PORT": "70000"}, "GRPC_PORT must be between 0 and 65535"),
        ({"DB_PREPARE": "maybe"}, "DB_PREPARE must be true or false"),
        ({"JWT_ALGORITHM": "none"}, "JWT_ALGORITHM must be HS256"),
        ({"JWT_PUBLIC_KEY": "/does/not/exist.pem"}, "JWT_PUBLIC_KEY is neither a PEM key"),
    ],
)
def test_bad_values_are_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, **overrides})


def test_every_fault_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"GRPC_PORT": "x", "DB_POOL_SIZE": "0"})
    text = str(info.value)
    for name in ("DATABASE_URL", "JWT_SECRET", "GRPC_PORT", "DB_POOL_SIZE"):
        assert name in text
