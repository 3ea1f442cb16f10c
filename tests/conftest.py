"""Shared fixtures: a throwaway, migrated database per test run on a real PostgreSQL."""

from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from devtools import database as devdb
from profile_service import migrate


@dataclass(frozen=True)
class ThrowawayDatabase:
    """URLs of the run's database: as administrator (schema owner) and as the service logs in."""

    name: str
    admin_url: str
    service_url: str


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
        yield ThrowawayDatabase(name=name, admin_url=admin_url, service_url=service_url)
    finally:
        devdb.drop_database(server_admin_url, name)


@pytest.fixture
def admin(test_db: ThrowawayDatabase) -> Iterator[psycopg.Connection]:
    """An autocommit administrator connection; the profiles table is emptied after the test."""
    with psycopg.connect(test_db.admin_url, autocommit=True) as conn:
        yield conn
        conn.execute("TRUNCATE profile.profiles")
