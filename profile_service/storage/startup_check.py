"""Before serving: refuse a database that was not migrated, or a login role under which
row-level security would not hold; exit codes follow (cli.py: 2 refused, 1 unreachable).

Every wait is bounded, a database that accepts the connection and then says nothing
included: the check runs on libpq's asynchronous API with a deadline, as calls do (db.py).
"""

import asyncio
import socket

import psycopg

from profile_service.runtime.config import Settings
from profile_service.storage import db


class UnsafeDatabaseRole(Exception):
    """The login role could bypass row-level security, or the schema is missing."""


class DatabaseUnreachable(Exception):
    """No connection to the database could be made, or it did not answer, in time."""


class PortTaken(Exception):
    """A port the server must listen on is in use."""


def check_database_at_start_up(settings: Settings) -> None:
    """check_database on DATABASE_URL, waiting at least 10 s: a database restarting beside us
    gets time to come up."""
    check_database(settings.database_url, timeout=max(settings.db_timeout_seconds, 10.0))


def check_ports(ports: dict[str, int]) -> None:
    """Raise PortTaken naming each setting whose port (0: any, not checked) cannot be bound.

    Checked before any worker starts: otherwise each worker, or the parent after starting
    them, fails on its own with a traceback.
    """
    taken = []
    for name, port in ports.items():
        if port == 0:
            continue
        try:
            _bind_every_address(port)
        except OSError as exc:
            taken.append(f"{name} {port} is not free ({exc.strerror})")
    if taken:
        raise PortTaken("; ".join(taken))


def _bind_every_address(port: int) -> None:
    """Bind `port` on every address, as the servers do, and let it go again."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        address = "::"
    except OSError:  # a host without IPv6
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        address = "0.0.0.0"  # noqa: S104 - the servers listen on every address too
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free
        probe.bind((address, port))


# By OID via pg_class: the login role has no USAGE on schema profile, by design. to_regrole: on
# a cluster never migrated the API roles do not exist, and naming them would fail before the
# missing table could be reported.
_FACTS = b"""SELECT r.rolsuper, r.rolbypassrls,
                    pg_has_role(to_regrole('authenticated'), 'MEMBER'),
                    pg_has_role(to_regrole('service_role'), 'MEMBER'),
                    pg_get_userbyid(c.relowner) = current_user,
                    has_table_privilege(c.oid, 'SELECT'),
                    -- settings that would steer auth.uid(): defaults of the login role or the
                    -- database (pg_settings does not list such placeholders), or the session's
                    (SELECT string_agg(DISTINCT name, ', ') FROM (
                       SELECT split_part(c, '=', 1) AS name
                         FROM pg_db_role_setting s, unnest(s.setconfig) AS c
                        WHERE s.setdatabase IN (0, (SELECT oid FROM pg_database
                                                     WHERE datname = current_database()))
                          AND s.setrole IN (0, r.oid)
                          AND c LIKE 'request.jwt.%'
                       UNION
                       SELECT n FROM unnest(ARRAY['request.jwt.claim.sub',
                                                  'request.jwt.claim.role',
                                                  'request.jwt.claims']) AS n
                        WHERE coalesce(current_setting(n, true), '') <> '') AS found)
               FROM pg_roles r
               LEFT JOIN pg_class c
                 ON c.relname = 'profiles'
                AND c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = 'profile')
              WHERE r.rolname = current_user"""


def check_database(conninfo: str, timeout: float) -> None:
    """Refuse a database that was not migrated, or a login role under which row-level
    security would not hold. Retries the connection for up to `timeout` seconds.

    A plain connection, not the pool's: the pool prepares the API's statements on every
    connection, which fails forever on a database that was not migrated.
    """
    row = asyncio.run(_login_role_facts(conninfo, timeout))
    superuser, bypass_rls, is_authenticated, is_service, owns, can_read = (
        None if v is None else v == b"t" for v in row[:6]
    )
    claim_defaults = None if row[6] is None else row[6].decode()
    if owns is None:
        raise UnsafeDatabaseRole("table profile.profiles is missing: run `profile-service migrate`")
    problems = [
        text
        for bad, text in (
            (superuser, "is a superuser"),
            (bypass_rls, "has BYPASSRLS"),
            (owns, "owns profile.profiles"),
            (can_read, "can read profile.profiles without SET ROLE (make it NOINHERIT)"),
            (not is_authenticated, "is not a member of authenticated"),
            (not is_service, "is not a member of service_role"),
            (
                claim_defaults,
                f"gets {claim_defaults} set by default (ALTER ROLE/DATABASE … SET), which would "
                "steer auth.uid(): RESET it",
            ),
        )
        if bad
    ]
    if problems:
        raise UnsafeDatabaseRole(
            "refusing to serve: the database login role "
            + ", ".join(problems)
            + "; row-level security would not hold"
        )


async def _login_role_facts(conninfo: str, timeout: float) -> tuple[bytes | None, ...]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                conn = await psycopg.AsyncConnection.connect(
                    db.with_tcp_liveness(conninfo), autocommit=True
                )
            try:
                row = await db.query_row(conn, _FACTS, deadline - loop.time())
            finally:
                conn.pgconn.finish()
            return row
        except (TimeoutError, db.NoAnswer) as exc:
            raise DatabaseUnreachable(f"the database did not answer within {timeout:.0f}s") from exc
        except psycopg.OperationalError as exc:
            if loop.time() >= deadline - 0.5:
                # psycopg's message names host and port, never the password.
                raise DatabaseUnreachable(
                    f"cannot reach the database within {timeout:.0f}s: {exc}"
                ) from exc
            await asyncio.sleep(0.5)
