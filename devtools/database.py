"""Find a PostgreSQL for development and tests, with no set-up step.

Order: DATABASE_URL if set; else the local server on 127.0.0.1:5432 if it answers; else an
embedded PostgreSQL (pgserver) in the git-ignored .pgdata/. PROFILE_EMBEDDED_DB=1 forces the
embedded one. The URL returned is an administrator's: it creates databases and roles.
"""

import logging
import os
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

_LOGGER = logging.getLogger(__name__)
_LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
_EMBEDDED_DIR = Path(__file__).resolve().parents[2] / ".pgdata"

# The login role the service uses in development and tests, shaped like PostgREST's
# authenticator: NOINHERIT, no superuser, no BYPASSRLS, only membership in the two API roles.
SERVICE_LOGIN_ROLE = "profile_authenticator"
SERVICE_LOGIN_PASSWORD = "dev-only-password"  # noqa: S105 - development databases only


def admin_url() -> str:
    """The administrator URL of the PostgreSQL to use, starting an embedded one if needed."""
    if os.environ.get("PROFILE_EMBEDDED_DB") == "1":
        return _embedded_url()
    if url := os.environ.get("DATABASE_URL"):
        return url
    if _answers(_LOCAL_URL):
        return _LOCAL_URL
    return _embedded_url()


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _embedded_url() -> str:
    import pgserver  # dev dependency, imported only when needed

    _EMBEDDED_DIR.mkdir(exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so `make test` after `make run`
    # (or a second test run) reuses it instead of paying initdb again.
    server = pgserver.get_server(_EMBEDDED_DIR, cleanup_mode=None)  # type: ignore[attr-defined]
    _LOGGER.info("using embedded PostgreSQL in %s", _EMBEDDED_DIR)
    return str(server.get_uri())


def with_database(url: str, database: str) -> str:
    """`url` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


def with_user(url: str, user: str, password: str) -> str:
    """`url` logging in as `user` instead."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password)}@{host}"))


def create_database(url: str, prefix: str = "profile_test") -> str:
    """Create an empty database with a unique name; return its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name


def ensure_database(url: str, name: str) -> None:
    """Create database `name` unless it exists."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(url: str, name: str) -> None:
    """Drop database `name`, disconnecting anyone still on it."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def ensure_service_login(url: str) -> str:
    """Create (or reset) the service's login role; return the URL that logs in as it.

    Needs the roles `authenticated` and `service_role`, which the migrations create.
    """
    role = sql.Identifier(SERVICE_LOGIN_ROLE)
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_LOGIN_ROLE,)
        ).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS PASSWORD {}").format(
                role, sql.Literal(SERVICE_LOGIN_PASSWORD)
            )
        )
        conn.execute(sql.SQL("GRANT authenticated, service_role TO {}").format(role))
    return with_user(url, SERVICE_LOGIN_ROLE, SERVICE_LOGIN_PASSWORD)
