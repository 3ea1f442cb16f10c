"""The `profile-service` command: migrate, serve, purge, reencrypt, token."""

import argparse
import os
import sys

from profile_service.domain.retention import DATABASE_PURGE_FLOOR_DAYS
from profile_service.domain.validation import DEFAULT_PURGE_BATCH
from profile_service.runtime.config import (
    ConfigError,
    ReencryptSettings,
    Settings,
    SigningSettings,
)

# Rows a `reencrypt` transaction reads and reseals: short locks, few round trips.
DEFAULT_REENCRYPT_BATCH = 500


def _migrate(_: argparse.Namespace) -> int:
    from profile_service.storage import migrate

    url = os.environ.get("DATABASE_URL")
    if not url:
        raise ConfigError("DATABASE_URL is required: the schema owner's connection URL")
    migrate.upgrade(url)
    return 0


def serve(settings: Settings) -> int:
    """`profile-service serve`: check what can be checked once, then one server process, or
    settings.workers of them (workers.py); the exit code."""
    from profile_service.runtime import lifecycle, workers
    from profile_service.storage import startup_check

    # Once here, so that a refusal is one message and exit code 2, not one per worker.
    ports = {"GRPC_PORT": settings.grpc_port, "METRICS_PORT": settings.metrics_port}
    if settings.grpc_health_port is not None:
        ports["GRPC_HEALTH_PORT"] = settings.grpc_health_port
    startup_check.check_ports(ports)
    if settings.workers > 1:
        startup_check.check_database_at_start_up(settings)
        return workers.supervise(settings)
    return lifecycle.run(settings)


def _serve(args: argparse.Namespace) -> int:
    import dataclasses

    from profile_service.runtime import logs
    from profile_service.storage import startup_check

    settings = Settings.from_env()
    if args.workers is not None:
        settings = dataclasses.replace(settings, workers=args.workers)
    logs.configure(settings.log_level)
    try:
        return serve(settings)
    except (startup_check.UnsafeDatabaseRole, startup_check.PortTaken) as exc:
        print(f"profile-service: {exc}", file=sys.stderr)
        return 2
    except startup_check.DatabaseUnreachable as exc:
        # Not a configuration error: the orchestrator's restart may well succeed.
        print(f"profile-service: {exc}", file=sys.stderr)
        return 1


def _token(args: argparse.Namespace) -> int:
    from profile_service.auth import tokens

    signing = SigningSettings.from_env()
    print(
        tokens.mint(
            signing.jwt_secret,
            role=args.role,
            sub=args.sub,
            ttl_seconds=args.ttl,
            audience=signing.jwt_audience,
        )
    )
    return 0


def _purge(args: argparse.Namespace) -> int:
    from profile_service.client import TLS, ProfileClient, ServiceError

    token = args.token
    if token is None:
        from profile_service.auth import tokens

        signing = SigningSettings.from_env()
        # Short-lived: it only has to outlive this one call.
        token = tokens.mint(
            signing.jwt_secret,
            role="service_role",
            ttl_seconds=int(args.timeout) + 60,
            audience=signing.jwt_audience,
        )
    tls = None
    if args.tls or args.ca_file or args.cert_file:
        tls = TLS(
            root_certificates=_read(args.ca_file),
            certificate_chain=_read(args.cert_file),
            private_key=_read(args.key_file),
            server_name=args.server_name,
        )
    with ProfileClient(args.target, token=token, tls=tls, timeout=args.timeout) as client:
        try:
            count = client.purge(
                args.retention_days, dry_run=args.dry_run, batch_size=args.batch_size
            )
        except ServiceError as exc:
            print(f"purge failed: {exc.code.name}: {exc.message}", file=sys.stderr)
            return 1
    print(count)
    return 0


def _reencrypt(args: argparse.Namespace) -> int:
    import psycopg

    from profile_service.runtime import logs
    from profile_service.storage import reencrypt
    from profile_service.storage.field_cipher import FieldCipher

    settings = ReencryptSettings.from_env()
    logs.configure("INFO")
    cipher = FieldCipher(settings.encryption_keys)
    try:
        counts = reencrypt.reencrypt(
            settings.database_url, cipher, batch_size=args.batch_size, dry_run=args.dry_run
        )
    except psycopg.Error as exc:
        # The SQLSTATE and its class, not the error's text (it may quote a value).
        print(
            f"reencrypt failed: database error {exc.sqlstate or type(exc).__name__}",
            file=sys.stderr,
        )
        return 1
    print(counts.summary(args.dry_run))
    if counts.undecryptable:
        print(
            f"reencrypt: {counts.undecryptable} values could not be decrypted with the "
            "configured keys (each logged with its profile id); they were left as they are",
            file=sys.stderr,
        )
        return 1
    return 0


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as file:
        return file.read()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="profile-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "migrate", help="alembic upgrade head on DATABASE_URL (run as the schema owner)"
    ).set_defaults(handler=_migrate)
    serve = commands.add_parser(
        "serve", help="serve gRPC on GRPC_PORT; SIGTERM drains in-flight calls, then exits 0"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="server processes sharing the port (default: $WORKERS, else the number of CPUs)",
    )
    serve.set_defaults(handler=_serve)

    purge = commands.add_parser(
        "purge", help="call Purge with a short-lived service_role token; print the count"
    )
    purge.add_argument(
        "--target",
        default=f"localhost:{os.environ.get('GRPC_PORT', '50051')}",
        help="host:port of the server (default: localhost:$GRPC_PORT)",
    )
    purge.add_argument("--token", help="use this token instead of minting one from JWT_SECRET")
    purge.add_argument(
        "--retention-days",
        type=int,
        default=0,
        help="purge profiles deleted more than this many days ago "
        f"(default: the server's minimum, {DATABASE_PURGE_FLOOR_DAYS} unless raised)",
    )
    purge.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help=f"rows per transaction (default: {DEFAULT_PURGE_BATCH})",
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge.add_argument("--tls", action="store_true", help="the server serves TLS (system roots)")
    purge.add_argument("--ca-file", help="PEM of the CA that signed the server's certificate")
    purge.add_argument("--server-name", help="the name in the server's certificate")
    purge.add_argument("--cert-file", help="this client's PEM certificate chain (mTLS)")
    purge.add_argument("--key-file", help="this client's PEM private key (mTLS)")
    purge.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the call (default: 600)"
    )
    purge.set_defaults(handler=_purge)

    reencrypt = commands.add_parser(
        "reencrypt",
        help="seal every limitations value with the first key of PROFILE_ENCRYPTION_KEYS "
        "(plaintext and older keys), beside live traffic; print the counts",
    )
    reencrypt.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_REENCRYPT_BATCH,
        help=f"rows per transaction (default: {DEFAULT_REENCRYPT_BATCH})",
    )
    reencrypt.add_argument("--dry-run", action="store_true", help="count, change nothing")
    reencrypt.set_defaults(handler=_reencrypt)

    token = commands.add_parser("token", help="mint a token for grpcurl; prints only the token")
    token.add_argument("--sub", help="the user's UUID (required for role authenticated)")
    token.add_argument("--role", default="authenticated", choices=["authenticated", "service_role"])
    token.add_argument("--ttl", type=int, default=3600, help="seconds of validity (default: 3600)")
    token.set_defaults(handler=_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    if args.command == "token" and args.role == "authenticated" and not args.sub:
        print("profile-service token: --sub is required for role authenticated", file=sys.stderr)
        return 2
    try:
        code: int = args.handler(args)
    except ConfigError as exc:
        print(f"profile-service: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        # A plain install is the client; the server's libraries come with the extra.
        if exc.name is None or exc.name.startswith("profile_service"):
            raise
        print(
            f"profile-service {args.command}: needs {exc.name}, which comes with the server: "
            "pip install 'profile-service[server]'",
            file=sys.stderr,
        )
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
