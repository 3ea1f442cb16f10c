"""Settings from the environment, read and validated once at start-up."""

import base64
import binascii
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

from profile_service.domain.retention import DATABASE_PURGE_FLOOR_DAYS, PURGE_MAX_RETENTION_DAYS

if TYPE_CHECKING:  # tls.py needs `cryptography`, which a client-only install lacks
    from profile_service.transport.tls import TlsFiles

N = TypeVar("N", int, float)
# The algorithms of a public key (JWT_PUBLIC_KEY) or of a JWKS key (jwks.py).
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
# With TLS on, health is also served in plaintext here: the kubelet's gRPC probe speaks no TLS.
DEFAULT_TLS_HEALTH_PORT = 50052
# PROFILE_ENCRYPTION_KEYS: AES-256 keys, each named (the name is stored beside what it seals).
ENCRYPTION_KEY_BYTES = 32
_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A key's name and its bytes; the first of a tuple of them encrypts, all decrypt.
EncryptionKey = tuple[str, bytes]


def _event_loop(reader: "_Reader") -> str:
    choice = reader.choice("EVENT_LOOP", "uvloop", ("uvloop", "asyncio"))
    if choice == "uvloop":
        try:
            import uvloop  # noqa: F401 - in the server extra
        except ImportError:
            reader.fault(
                "EVENT_LOOP",
                "is uvloop (the default), which is not installed: install "
                "'profile-service[server]', or set EVENT_LOOP=asyncio",
            )
    return choice


class ConfigError(Exception):
    """One or more settings are missing or invalid; the message lists each of them."""


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment."""

    database_url: str
    jwt_secret: str | None
    jwt_secret_previous: str | None
    jwt_public_key: str | None
    jwt_algorithm: str
    jwt_jwks_url: str | None
    jwt_audience: str | None
    grpc_port: int
    metrics_port: int
    tls: "TlsFiles | None"
    grpc_health_port: int | None
    workers: int
    pin_workers: bool
    sched_batch: bool
    max_connection_age_seconds: float
    max_connection_age_grace_seconds: float
    purge_min_retention_days: int
    db_pool_size: int
    db_prepare: bool
    db_timeout_seconds: float
    db_silent_seconds: float
    shutdown_grace_seconds: float
    access_log_all: bool
    health_check_interval_seconds: float
    log_level: str
    # The event loop the server runs on: "uvloop" (the default) or "asyncio".
    event_loop: str = "uvloop"
    # Where spans go: "otlp" and/or "console"; empty when tracing is off (the default).
    tracing_exporters: tuple[str, ...] = ()
    # PROFILE_ENCRYPTION_KEYS; empty: `limitations` is written in clear. Never in a repr.
    encryption_keys: tuple[EncryptionKey, ...] = field(default=(), repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read the settings from `env` (default: os.environ); raise ConfigError listing faults."""
        reader = _Reader(os.environ if env is None else env)
        public_key = reader.text("JWT_PUBLIC_KEY")
        if public_key and not public_key.lstrip().startswith("-----BEGIN"):
            public_key = reader.file("JWT_PUBLIC_KEY", public_key)
        algorithm = reader.text("JWT_ALGORITHM") or ("RS256" if public_key else "HS256")
        secret = reader.text("JWT_SECRET")
        jwks_url = reader.text("JWT_JWKS_URL")
        if jwks_url and not _is_http_url(jwks_url):
            reader.fault("JWT_JWKS_URL", f"must be an http:// or https:// URL, got {jwks_url!r}")
        if public_key:
            if jwks_url:
                # Two sources of asymmetric keys would leave it unclear which one a token
                # without a `kid` is checked against: one or the other.
                reader.fault(
                    "JWT_JWKS_URL", "cannot be set with JWT_PUBLIC_KEY (the JWKS has the keys)"
                )
            if algorithm not in ASYMMETRIC_ALGORITHMS:
                reader.fault("JWT_ALGORITHM", f"must be one of {', '.join(ASYMMETRIC_ALGORITHMS)}")
            elif not _is_usable_public_key(public_key, algorithm):
                reader.fault("JWT_PUBLIC_KEY", f"is not a PEM public key usable with {algorithm}")
        elif algorithm != "HS256":
            # A JWKS names each key's algorithm itself; JWT_ALGORITHM is the secret's.
            reader.fault("JWT_ALGORITHM", "must be HS256 unless JWT_PUBLIC_KEY is set")
        elif secret and len(secret) < 32:
            reader.fault("JWT_SECRET", "must be at least 32 characters")
        elif not secret and not jwks_url:
            reader.fault("JWT_SECRET", "is required (or set JWT_PUBLIC_KEY or JWT_JWKS_URL)")
        previous = reader.text("JWT_SECRET_PREVIOUS")
        if previous and len(previous) < 32:
            reader.fault("JWT_SECRET_PREVIOUS", "must be at least 32 characters")
        tls = _tls_files(reader)
        health_port = reader.text("GRPC_HEALTH_PORT")
        settings = cls(
            database_url=reader.required("DATABASE_URL"),
            jwt_secret=None if public_key else secret,
            jwt_secret_previous=None if public_key else previous,
            jwt_public_key=public_key,
            jwt_algorithm=algorithm,
            jwt_jwks_url=jwks_url,
            jwt_audience=reader.text("JWT_AUDIENCE"),
            grpc_port=reader.integer("GRPC_PORT", 50051, 0, 65535),
            metrics_port=reader.integer("METRICS_PORT", 9090, 0, 65535),
            tls=tls,
            grpc_health_port=(
                reader.integer("GRPC_HEALTH_PORT", DEFAULT_TLS_HEALTH_PORT, 0, 65535)
                if tls is not None or health_port is not None
                else None
            ),
            workers=reader.integer("WORKERS", _cpu_count(), 1, 256),
            pin_workers=reader.boolean("PIN_WORKERS", True),
            sched_batch=reader.boolean("SCHED_BATCH", True),
            max_connection_age_seconds=reader.number(
                "GRPC_MAX_CONNECTION_AGE_SECONDS", 300.0, 1, 86400
            ),
            # GOAWAY already stops new calls on an old connection; the grace only bounds the
            # calls in flight, so it must outlast the longest one: a Purge (the CronJob allows
            # it 900 s).
            max_connection_age_grace_seconds=reader.number(
                "GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", 1200.0, 0, 86400
            ),
            purge_min_retention_days=reader.integer(
                "PURGE_MIN_RETENTION_DAYS",
                DATABASE_PURGE_FLOOR_DAYS,
                DATABASE_PURGE_FLOOR_DAYS,
                PURGE_MAX_RETENTION_DAYS,
                why_min="the database keeps soft-deleted profiles at least "
                f"{DATABASE_PURGE_FLOOR_DAYS} days (GDPR grace)",
            ),
            db_pool_size=reader.integer("DB_POOL_SIZE", 16, 1, 1000),
            db_prepare=reader.boolean("DB_PREPARE", True),
            db_timeout_seconds=reader.number("DB_TIMEOUT_SECONDS", 5.0, 0.1, 600),
            db_silent_seconds=reader.number("DB_SILENT_SECONDS", 1.0, 0.2, 600),
            shutdown_grace_seconds=reader.number("SHUTDOWN_GRACE_SECONDS", 10.0, 0, 3600),
            access_log_all=reader.choice("ACCESS_LOG", "errors", ("errors", "all")) == "all",
            log_level=reader.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error", "critical")
            ).upper(),
            health_check_interval_seconds=reader.number(
                "HEALTH_CHECK_INTERVAL_SECONDS", 1.0, 0.1, 60
            ),
            event_loop=_event_loop(reader),
            tracing_exporters=_tracing_exporters(reader),
            encryption_keys=_encryption_keys(reader),
        )
        reader.raise_if_faulty()
        return settings


@dataclass(frozen=True)
class ReencryptSettings:
    """What `profile-service reencrypt` needs: the service's database login and its keys."""

    database_url: str
    encryption_keys: tuple[EncryptionKey, ...] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ReencryptSettings":
        """Read DATABASE_URL and PROFILE_ENCRYPTION_KEYS (required here); raise ConfigError."""
        reader = _Reader(os.environ if env is None else env)
        url = reader.required("DATABASE_URL")
        keys = _encryption_keys(reader)
        if not keys and reader.text("PROFILE_ENCRYPTION_KEYS") is None:
            reader.fault("PROFILE_ENCRYPTION_KEYS", "is required (the keys to encrypt with)")
        settings = cls(url, keys)
        reader.raise_if_faulty()
        return settings


def _encryption_keys(reader: "_Reader") -> tuple[EncryptionKey, ...]:
    """PROFILE_ENCRYPTION_KEYS: `name:base64key[,name:base64key...]`. A fault names the entry
    by its position and name, never its key material."""
    raw = reader.text("PROFILE_ENCRYPTION_KEYS")
    if raw is None:
        return ()
    keys: list[EncryptionKey] = []
    for position, entry in enumerate(raw.split(","), start=1):
        name, colon, encoded = entry.strip().partition(":")
        where = f"entry {position}"
        if not colon or not name:
            reader.fault("PROFILE_ENCRYPTION_KEYS", f"{where} is not name:base64key")
            continue
        if not _KEY_NAME.fullmatch(name):
            reader.fault(
                "PROFILE_ENCRYPTION_KEYS",
                f"{where}: a key name is 1 to 64 of A-Z a-z 0-9 _ . -",
            )
            continue
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            reader.fault("PROFILE_ENCRYPTION_KEYS", f"key {name!r} is not base64")
            continue
        if len(key) != ENCRYPTION_KEY_BYTES:
            reader.fault(
                "PROFILE_ENCRYPTION_KEYS",
                f"key {name!r} must be {ENCRYPTION_KEY_BYTES} bytes, got {len(key)}",
            )
            continue
        if name in (known for known, _ in keys):
            reader.fault("PROFILE_ENCRYPTION_KEYS", f"key name {name!r} appears twice")
            continue
        keys.append((name, key))
    return tuple(keys)


@dataclass(frozen=True)
class SigningSettings:
    """What `profile-service purge` and `token` need to mint tokens the server accepts."""

    jwt_secret: str
    jwt_audience: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SigningSettings":
        """Read JWT_SECRET and JWT_AUDIENCE; raise ConfigError if the secret is missing."""
        reader = _Reader(os.environ if env is None else env)
        settings = cls(reader.required("JWT_SECRET"), reader.text("JWT_AUDIENCE"))
        reader.raise_if_faulty()
        return settings


def _tls_files(reader: "_Reader") -> "TlsFiles | None":
    """GRPC_TLS_*: both the certificate and its key, or neither; checked by loading them."""
    cert, key = reader.text("GRPC_TLS_CERT_FILE"), reader.text("GRPC_TLS_KEY_FILE")
    client_ca = reader.text("GRPC_TLS_CLIENT_CA_FILE")
    if not cert and not key:
        if client_ca:
            reader.fault("GRPC_TLS_CLIENT_CA_FILE", "needs GRPC_TLS_CERT_FILE and _KEY_FILE")
        return None
    if not cert or not key:
        missing = "GRPC_TLS_CERT_FILE" if not cert else "GRPC_TLS_KEY_FILE"
        reader.fault(missing, "is required when the other GRPC_TLS_* file is set")
        return None
    from profile_service.transport import tls  # only now: it needs `cryptography`

    files = tls.TlsFiles(cert, key, client_ca)
    try:
        tls.load(files)
    except tls.UnusableCertificate as exc:
        reader.fault("GRPC_TLS_*", f"unusable: {exc}")
        return None
    return files


TRACING_INSTALL = "pip install 'profile-service[tracing]'"
_TRACING_EXPORTERS = ("otlp", "console")


def _tracing_exporters(reader: "_Reader") -> tuple[str, ...]:
    """The span exporters the standard OTEL_* switches ask for; () when tracing is off.

    On when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or its _TRACES_ variant), or
    OTEL_TRACES_EXPORTER names an exporter; `none` there, or OTEL_SDK_DISABLED=true, is off
    whatever else is set. The SDK reads the other OTEL_* variables itself.
    """
    # The specification's rule: only "true", in any case, disables.
    if (reader.text("OTEL_SDK_DISABLED") or "").lower() == "true":
        return ()
    listed = reader.text("OTEL_TRACES_EXPORTER")
    exporters: tuple[str, ...]
    if listed is None:
        endpoint = next(
            (
                name
                for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
                if reader.text(name)
            ),
            None,
        )
        if endpoint is None:
            return ()
        switch, exporters = endpoint, ("otlp",)
    else:
        switch = "OTEL_TRACES_EXPORTER"
        exporters = tuple(dict.fromkeys(e.strip().lower() for e in listed.split(",") if e.strip()))
        if exporters in ((), ("none",)):
            return ()
        unknown = [e for e in exporters if e not in _TRACING_EXPORTERS]
        if unknown:
            reader.fault(
                switch, f"must be otlp, console (or both, comma-separated) or none, got {listed!r}"
            )
            return ()
    if "otlp" in exporters:
        protocol_name = (
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
            if reader.text("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            else "OTEL_EXPORTER_OTLP_PROTOCOL"
        )
        protocol = reader.text(protocol_name)
        if protocol is not None and protocol.lower() != "grpc":
            # The tracing extra ships the OTLP exporter over gRPC only.
            reader.fault(protocol_name, f"must be grpc (OTLP over gRPC), got {protocol!r}")
    if not tracing_installed():
        reader.fault(
            switch,
            f"turns tracing on, but OpenTelemetry is not installed: {TRACING_INSTALL} "
            "(or set OTEL_SDK_DISABLED=true)",
        )
        return ()
    return exporters


def tracing_installed() -> bool:
    """Whether the `tracing` extra's packages can be imported (found, not imported)."""
    import importlib.util

    try:
        return all(
            importlib.util.find_spec(name) is not None
            for name in ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.grpc")
        )
    except (ImportError, ValueError):  # a parent package missing
        return False


def _is_usable_public_key(pem: str, algorithm: str) -> bool:
    """Whether PyJWT can verify `algorithm` signatures with `pem` (checked once, here, so that a
    bad key stops the start-up instead of failing every call)."""
    import jwt

    if "PRIVATE KEY" in pem:  # a verifier has no business holding the signing key
        return False
    try:
        jwt.get_algorithm_by_name(algorithm).prepare_key(pem)
    except (jwt.InvalidKeyError, ValueError, TypeError):
        return False
    return True


def _is_http_url(url: str) -> bool:
    """Whether `url` is an absolute http(s) URL with a host (urllib would open file:// too)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _cpu_count() -> int:
    # The CPUs this process may run on (a cpuset), not all the machine's.
    return len(os.sched_getaffinity(0))


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._faults: list[str] = []

    def fault(self, name: str, problem: str) -> None:
        self._faults.append(f"{name} {problem}")

    def raise_if_faulty(self) -> None:
        if self._faults:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(self._faults))

    def text(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            self.fault(name, "is required")
            return ""
        return value

    def file(self, name: str, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError as exc:
            self.fault(name, f"is neither a PEM key nor a readable file ({exc.strerror})")
            return None

    def integer(
        self, name: str, default: int, low: int, high: int, why_min: str | None = None
    ) -> int:
        return self._ranged(name, default, low, high, int, "a whole number", why_min)

    def number(self, name: str, default: float, low: float, high: float) -> float:
        return self._ranged(name, default, low, high, float, "a number")

    def _ranged(
        self,
        name: str,
        default: N,
        low: N,
        high: N,
        parse: Callable[[str], N],
        kind: str,
        why_min: str | None = None,
    ) -> N:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = parse(raw)
        except ValueError:
            self.fault(name, f"must be {kind}, got {raw!r}")
            return default
        if value < low and why_min:
            self.fault(name, f"must be at least {low}: {why_min}; got {value}")
        elif not low <= value <= high:
            self.fault(name, f"must be between {low} and {high}, got {value}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            self.fault(name, f"must be one of {', '.join(allowed)}, got {raw!r}")
            return default
        return raw.lower()

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        self.fault(name, f"must be true or false, got {raw!r}")
        return default
