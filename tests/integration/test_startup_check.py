"""The start-up check refuses every login role under which row-level security would not hold.

Each case is a real login role on the server, logging in to a migrated throwaway database.
"""

import secrets
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from devtools import database as devdb
from profile_service.storage import migrate
from profile_service.storage.startup_check import (
    DatabaseUnreachable,
    UnsafeDatabaseRole,
    check_database,
)
from tests.conftest import ThrowawayDatabase
from tests.e2e.tcp_proxy import TcpProxy, through, upstream_of

PASSWORD = "startup-check-test"

# (how the role is made, after CREATE ROLE <name> LOGIN PASSWORD ...; the refusal's words)
CASES = {
    "has BYPASSRLS": ("NOINHERIT BYPASSRLS IN ROLE authenticated, service_role", "has BYPASSRLS"),
    "inherits the API roles": (
        "INHERIT IN ROLE authenticated, service_role",
        "can read profile.profiles without SET ROLE",
    ),
    "not a member of service_role": (
        "NOINHERIT IN ROLE authenticated",
        "is not a member of service_role",
    ),
    "owns the table": ("NOINHERIT IN ROLE authenticated, service_role", "owns profile.profiles"),
}


# What docs/operations.md tells operators to create.
RECOMMENDED = "NOINHERIT IN ROLE authenticated, service_role"


def _create_login(admin: psycopg.Connection, role: str, attributes: str) -> None:
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} " + attributes).format(
            sql.Identifier(role), sql.Literal(PASSWORD)
        )
    )


@pytest.fixture(scope="module")
def migrated_url(server_admin_url: str) -> Iterator[str]:
    name = devdb.create_database(server_admin_url, prefix="profile_startup")
    url = devdb.with_database(server_admin_url, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        devdb.drop_database(server_admin_url, name)


@pytest.fixture
def login_role(migrated_url: str) -> Iterator[str]:
    role = f"profile_startup_{secrets.token_hex(4)}"
    yield role
    with psycopg.connect(migrated_url, autocommit=True) as admin:
        owner = admin.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class "
            "WHERE oid = 'profile.profiles'::regclass"
        ).fetchone()
        if owner == (role,):
            admin.execute("ALTER TABLE profile.profiles OWNER TO CURRENT_USER")
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(("attributes", "refusal"), CASES.values(), ids=CASES)
def test_a_role_that_would_escape_rls_is_refused(
    migrated_url: str, login_role: str, attributes: str, refusal: str
) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as admin:
        _create_login(admin, login_role, attributes)
        if refusal == "owns profile.profiles":
            admin.execute(
                sql.SQL("ALTER TABLE profile.profiles OWNER TO {}").format(
                    sql.Identifier(login_role)
                )
            )
    with pytest.raises(UnsafeDatabaseRole, match=refusal):
        check_database(devdb.with_user(migrated_url, login_role, PASSWORD), timeout=5)


def test_the_recommended_role_is_accepted(migrated_url: str, login_role: str) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as admin:
        _create_login(admin, login_role, RECOMMENDED)
    check_database(devdb.with_user(migrated_url, login_role, PASSWORD), timeout=5)


@pytest.mark.parametrize("freeze_after", ["connecting", "connected"])
def test_a_database_that_stops_answering_is_unreachable_not_a_hang(
    test_db: ThrowawayDatabase, freeze_after: str
) -> None:
    """Accepting the connection and then saying nothing (frozen) ends the start-up within its
    timeout, like any other wait."""
    proxy = TcpProxy(upstream_of(test_db.service_url))
    proxy.start()
    url = through(proxy, test_db.service_url)
    if freeze_after == "connecting":
        proxy.freeze()
    else:
        proxy.hold_queries()  # the handshake completes; the check's query is never answered
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnreachable, match="did not answer"):
            check_database(url, timeout=2)
    finally:
        proxy.thaw()
        proxy.cut()
    assert time.monotonic() - started < 5


def test_a_default_for_a_jwt_claim_setting_is_refused(migrated_url: str, login_role: str) -> None:
    """`ALTER ROLE … SET request.jwt.claim.sub` would steer auth.uid() to one user's row."""
    with psycopg.connect(migrated_url, autocommit=True) as admin:
        _create_login(admin, login_role, RECOMMENDED)
        admin.execute(
            sql.SQL("ALTER ROLE {} SET request.jwt.claim.sub = {}").format(
                sql.Identifier(login_role), sql.Literal("6f1f3f0e-0000-4000-8000-000000000001")
            )
        )
    with pytest.raises(UnsafeDatabaseRole, match=r"request\.jwt\.claim\.sub.*RESET"):
        check_database(devdb.with_user(migrated_url, login_role, PASSWORD), timeout=5)
