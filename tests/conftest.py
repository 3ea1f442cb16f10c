"""Shared fixtures: a throwaway, migrated database per test run on a real PostgreSQL."""

import os
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from devtools import database as devdb
from profile_service.storage import migrate
from tests import pgbouncer


@dataclass(frozen=True)
class ThrowawayDatabase:
    """URLs of the run's database: as administrator (schema owner) and as the service logs in."""

    name: str
    admin_url: str
    service_url: str
    # The PgBouncer that service_url goes through, in the PgBouncer pass.
    pgbouncer_port: int | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The PgBouncer pass needs Debian's pgbouncer: CI installs it (.ci/run) and must not
    skip; a developer's machine without it skips the pass, saying how to get it."""
    if not pgbouncer.VIA_PGBOUNCER or pgbouncer.binary() is not None:
        return
    if os.environ.get("CI") == "true":
        raise pytest.UsageError(f"the PgBouncer pass needs pgbouncer ({pgbouncer.INSTALL_HINT})")
    skip = pytest.mark.skip(reason=f"pgbouncer not installed ({pgbouncer.INSTALL_HINT})")
    for item in items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def server_admin_url() -> str:
    """Administrator URL of the PostgreSQL server the run uses (found or started)."""
    return devdb.admin_url()


@pytest.fixture(scope="session")
def test_db(server_admin_url: str) -> Iterator[ThrowawayDatabase]:
    """A migrated database created for this run and dropped after it."""
    name = devdb.create_database(server_admin_url)
    admin_url = devdb.with_database(server_admin_url, name)
    try:
        migrate.upgrade(admin_url)
        service_url = devdb.ensure_service_login(admin_url)
        if not pgbouncer.VIA_PGBOUNCER:
            yield ThrowawayDatabase(name=name, admin_url=admin_url, service_url=service_url)
            return
        # The PgBouncer pass: every server the tests start goes through it (DB_PREPARE=false);
        # the tests' own administrator connections do not.
        login, password = pgbouncer.login_of(service_url)
        with pgbouncer.running(admin_url, {login: password}, admin_users=login) as port:
            via = pgbouncer.through(service_url, port)
            yield ThrowawayDatabase(name, admin_url, via, pgbouncer_port=port)
    finally:
        devdb.drop_database(server_admin_url, name)


@pytest.fixture
def admin(test_db: ThrowawayDatabase) -> Iterator[psycopg.Connection]:
    """An autocommit administrator connection; the profiles table is emptied after the test."""
    with psycopg.connect(test_db.admin_url, autocommit=True) as conn:
        yield conn
        conn.execute("TRUNCATE profile.profiles")
