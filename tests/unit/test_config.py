"""Settings from the environment: defaults, and one clear message per bad value."""

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from profile_service.runtime.config import ConfigError, Settings
from tests.certificates import Authority

BASE = {"DATABASE_URL": "postgresql://x@localhost/db", "JWT_SECRET": "s" * 32}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.grpc_port == 50051
    assert settings.purge_min_retention_days == 30
    assert settings.jwt_algorithm == "HS256"
    assert settings.jwt_audience is None


def test_log_level_is_any_case_of_a_logging_level() -> None:
    assert Settings.from_env({**BASE, "LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert Settings.from_env(BASE).log_level == "INFO"


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
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of debug, info, warning"),
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


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_PRIVATE_PEM = RSA_KEY.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption(),
).decode()


def test_a_usable_public_key_is_accepted() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": BASE["DATABASE_URL"], "JWT_PUBLIC_KEY": _pem_public(RSA_KEY)}
    )
    assert (settings.jwt_algorithm, settings.jwt_secret) == ("RS256", None)


@pytest.mark.parametrize(
    ("key", "algorithm"),
    [
        ("-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n", "RS256"),
        (_pem_public(ec.generate_private_key(ec.SECP256R1())), "RS256"),
        (_pem_public(RSA_KEY), "ES256"),
        (RSA_PRIVATE_PEM, "RS256"),
    ],
    ids=["garbage", "ec-key-for-rs256", "rsa-key-for-es256", "private-key"],
)
def test_a_public_key_that_cannot_verify_stops_the_start_up(key: str, algorithm: str) -> None:
    env = {"DATABASE_URL": BASE["DATABASE_URL"], "JWT_PUBLIC_KEY": key, "JWT_ALGORITHM": algorithm}
    with pytest.raises(
        ConfigError, match=f"JWT_PUBLIC_KEY is not a PEM public key usable with {algorithm}"
    ):
        Settings.from_env(env)


def _tls_env(tmp_path: Path, cert: bytes, key: bytes, **more: str) -> dict[str, str]:
    (tmp_path / "tls.crt").write_bytes(cert)
    (tmp_path / "tls.key").write_bytes(key)
    return {
        **BASE,
        "GRPC_TLS_CERT_FILE": str(tmp_path / "tls.crt"),
        "GRPC_TLS_KEY_FILE": str(tmp_path / "tls.key"),
        **more,
    }


def test_tls_files_are_loaded_and_health_gets_its_plaintext_port(tmp_path: Path) -> None:
    issued = Authority().server()
    settings = Settings.from_env(_tls_env(tmp_path, issued.cert, issued.key))
    assert settings.tls is not None and settings.tls.cert_file.endswith("tls.crt")
    assert settings.grpc_health_port == 50052
    assert Settings.from_env(BASE).grpc_health_port is None  # plaintext: health on GRPC_PORT


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"GRPC_TLS_CERT_FILE": "/x.crt"}, "GRPC_TLS_KEY_FILE is required when"),
        ({"GRPC_TLS_CLIENT_CA_FILE": "/ca.crt"}, "GRPC_TLS_CLIENT_CA_FILE needs"),
    ],
)
def test_tls_settings_come_together(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BASE, **overrides})


def test_a_key_that_is_not_the_certificates_stops_the_start_up(tmp_path: Path) -> None:
    ca = Authority()
    env = _tls_env(tmp_path, ca.server().cert, ca.server().key)
    with pytest.raises(ConfigError, match=r"tls\.key is not the key of"):
        Settings.from_env(env)
    env = _tls_env(tmp_path, b"not a certificate", ca.server().key)
    with pytest.raises(ConfigError, match="no PEM certificate"):
        Settings.from_env(env)


JWKS_URL = "https://project.supabase.co/auth/v1/.well-known/jwks.json"


def test_a_jwks_url_alone_is_enough() -> None:
    settings = Settings.from_env({"DATABASE_URL": BASE["DATABASE_URL"], "JWT_JWKS_URL": JWKS_URL})
    assert (settings.jwt_jwks_url, settings.jwt_secret) == (JWKS_URL, None)
    assert settings.jwt_algorithm == "HS256"  # the secret's, unused; JWKS keys name their own


def test_a_jwks_url_may_be_set_beside_the_secret() -> None:
    settings = Settings.from_env({**BASE, "JWT_JWKS_URL": "http://auth.internal:9999/jwks"})
    assert (settings.jwt_jwks_url, settings.jwt_secret) == (
        "http://auth.internal:9999/jwks",
        BASE["JWT_SECRET"],
    )


def test_no_jwks_url_by_default() -> None:
    assert Settings.from_env(BASE).jwt_jwks_url is None


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://host/jwks.json", "jwks.json", "https://", "http://[::1"],
)
def test_a_jwks_url_must_be_http_or_https(url: str) -> None:
    with pytest.raises(ConfigError, match="JWT_JWKS_URL must be an http:// or https:// URL"):
        Settings.from_env({**BASE, "JWT_JWKS_URL": url})


def test_a_jwks_url_cannot_be_combined_with_a_public_key() -> None:
    env = {"DATABASE_URL": BASE["DATABASE_URL"], "JWT_PUBLIC_KEY": _pem_public(RSA_KEY)}
    with pytest.raises(ConfigError, match="JWT_JWKS_URL cannot be set with JWT_PUBLIC_KEY"):
        Settings.from_env({**env, "JWT_JWKS_URL": JWKS_URL})


def test_a_short_secret_is_refused_beside_a_jwks_url() -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET must be at least 32 characters"):
        Settings.from_env({**BASE, "JWT_SECRET": "short", "JWT_JWKS_URL": JWKS_URL})


def test_neither_secret_nor_jwks_url_names_both() -> None:
    with pytest.raises(ConfigError, match=r"JWT_SECRET is required \(or set JWT_PUBLIC_KEY or "):
        Settings.from_env({"DATABASE_URL": BASE["DATABASE_URL"]})
