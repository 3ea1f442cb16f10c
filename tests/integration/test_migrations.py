"""Migrations: reversible, idempotent, and producing exactly the documented schema."""

import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from alembic.script import ScriptDirectory

from devtools import database as devdb
from profile_service.storage import migrate
from tests.conftest import ThrowawayDatabase

_SNAPSHOT_QUERIES = {
    "columns": """SELECT table_schema, table_name, column_name, data_type, is_nullable,
                         column_default
                    FROM information_schema.columns
                   WHERE table_schema IN ('profile', 'auth') ORDER BY 1, 2, 3""",
    "policies": "SELECT policyname, cmd, roles::text, qual, with_check FROM pg_policies ORDER BY 1",
    "functions": """SELECT n.nspname, p.proname, p.prosecdef, p.proconfig::text
                      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname IN ('profile', 'profile_api', 'auth') ORDER BY 1, 2""",
    "indexes": """SELECT indexname, indexdef FROM pg_indexes
                   WHERE schemaname = 'profile' ORDER BY 1""",
    "grants": """SELECT grantee, privilege_type, column_name
                   FROM information_schema.column_privileges
                  WHERE table_schema = 'profile' ORDER BY 1, 2, 3""",
    "version": "SELECT version_num FROM alembic_version",
}


def _snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(url) as conn:
        return {k: conn.execute(q).fetchall() for k, q in _SNAPSHOT_QUERIES.items()}


@pytest.fixture
def empty_db_url(server_admin_url: str) -> Iterator[str]:
    name = devdb.create_database(server_admin_url, prefix="profile_migrations")
    try:
        yield devdb.with_database(server_admin_url, name)
    finally:
        devdb.drop_database(server_admin_url, name)


def _head() -> str:
    """The newest revision, as Alembic finds it among the migrations."""
    head = ScriptDirectory.from_config(migrate.alembic_config("")).get_current_head()
    assert head is not None
    return head


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace").fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade_on_an_empty_database(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    first = _snapshot(empty_db_url)
    assert first["version"] == [(_head(),)]

    migrate.downgrade(empty_db_url, "0003")
    definitions = {str(name): str(sql) for name, sql in _snapshot(empty_db_url)["indexes"]}
    assert definitions["profiles_deleted_at_idx"].endswith("USING btree (deleted_at)")
    migrate.downgrade(empty_db_url, "base")
    assert not {"profile", "profile_api", "auth"} & _schemas(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (0,)
        # Cluster-wide roles stay: other databases on the server may use them.
        roles = conn.execute(
            "SELECT rolname FROM pg_roles "
            "WHERE rolname IN ('anon', 'authenticated', 'service_role')"
        ).fetchall()
        assert len(roles) == 3

    migrate.upgrade(empty_db_url)
    assert _snapshot(empty_db_url) == first


def test_second_upgrade_head_changes_nothing(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    before = _snapshot(empty_db_url)
    migrate.upgrade(empty_db_url)
    assert _snapshot(empty_db_url) == before


def test_existing_auth_uid_is_kept_and_survives_downgrade(empty_db_url: str) -> None:
    # On Supabase, auth.uid() already exists; the migration must neither replace nor drop it.
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA auth")
        conn.execute(
            "CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS "
            "$$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$"
        )
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "base")
    with psycopg.connect(empty_db_url) as conn:
        assert conn.execute("SELECT to_regprocedure('auth.uid()') IS NOT NULL").fetchone() == (
            True,
        )


_EXPECTED_COLUMNS = [
    # name, type, nullable, default
    ("id", "uuid", "NO", "gen_random_uuid()"),
    ("owner_id", "uuid", "NO", None),
    ("age", "integer", "YES", None),
    ("sex", "text", "YES", None),
    ("height_cm", "integer", "YES", None),
    ("weight_kg", "integer", "YES", None),
    ("experience_level", "text", "YES", None),
    ("limitations", "text", "YES", None),
    ("primary_goal", "text", "YES", None),
    ("available_equipment", "ARRAY", "YES", None),
    ("session_length", "text", "YES", None),
    ("generation_params", "jsonb", "YES", None),
    ("deleted_at", "timestamp with time zone", "YES", None),
    ("created_at", "timestamp with time zone", "NO", "now()"),
    ("updated_at", "timestamp with time zone", "NO", "now()"),
]


def test_profiles_table_matches_the_schema_document(test_db: ThrowawayDatabase) -> None:
    with psycopg.connect(test_db.admin_url) as conn:
        columns = conn.execute(
            """SELECT column_name, data_type, is_nullable, column_default
                 FROM information_schema.columns
                WHERE table_schema = 'profile' AND table_name = 'profiles'
                ORDER BY ordinal_position"""
        ).fetchall()
        element = conn.execute(
            """SELECT e.data_type FROM information_schema.columns c
                 JOIN information_schema.element_types e
                   ON (c.table_catalog, c.table_schema, c.table_name, 'TABLE', c.dtd_identifier)
                    = (e.object_catalog, e.object_schema, e.object_name, e.object_type,
                       e.collection_type_identifier)
                WHERE c.table_schema = 'profile' AND c.column_name = 'available_equipment'"""
        ).fetchone()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'profile'"
            ).fetchall()
        )
        rls = conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'profile.profiles'::regclass"
        ).fetchone()
        policies = {r[0] for r in conn.execute("SELECT policyname FROM pg_policies").fetchall()}
        constraints = conn.execute(
            "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'profile.profiles'::regclass ORDER BY 1"
        ).fetchall()

    assert columns == _EXPECTED_COLUMNS
    assert element == ("text",)
    assert indexes["profiles_pkey"].endswith("USING btree (id)")
    assert indexes["profiles_owner_id_key"].startswith("CREATE UNIQUE INDEX")
    assert indexes["profiles_owner_id_key"].endswith("USING btree (owner_id)")
    # Soft-deleted rows only: what Purge looks for (migration 0004).
    assert indexes["profiles_deleted_at_idx"].endswith(
        "USING btree (deleted_at) WHERE (deleted_at IS NOT NULL)"
    )
    assert rls == (True,)
    # No foreign key: owner_id refers to the auth service's users by value only.
    # ('t': the constraint trigger of migration 0005, a deadline check, not a reference.)
    assert constraints == [
        ("p", "PRIMARY KEY (id)"),
        ("t", "TRIGGER DEFERRABLE INITIALLY DEFERRED"),
        ("u", "UNIQUE (owner_id)"),
    ]
    assert {
        "select_own_profiles",
        "select_all_profiles_service",
        "insert_own_profile",
        "update_own_profile",
    } <= policies


def test_owner_id_is_unique(admin: psycopg.Connection) -> None:
    owner = uuid.uuid4()
    admin.execute("INSERT INTO profile.profiles (owner_id) VALUES (%s)", (owner,))
    with pytest.raises(psycopg.errors.UniqueViolation):
        admin.execute("INSERT INTO profile.profiles (owner_id) VALUES (%s)", (owner,))


def test_the_api_roles_cannot_log_in(admin: psycopg.Connection) -> None:
    rows = admin.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles "
        "WHERE rolname IN ('anon', 'authenticated', 'service_role') ORDER BY rolname"
    ).fetchall()
    assert rows == [("anon", False), ("authenticated", False), ("service_role", False)]


def test_pgcrypto_is_installed_where_the_server_offers_it(admin: psycopg.Connection) -> None:
    row = admin.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto'), "
        "       EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgcrypto')"
    ).fetchone()
    assert row is not None
    offered, installed = row
    assert installed == offered


def test_updated_at_is_kept_by_a_trigger_calling_set_updated_at(
    admin: psycopg.Connection,
) -> None:
    rows = admin.execute(
        "SELECT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
        "WHERE t.tgrelid = 'profile.profiles'::regclass AND NOT t.tgisinternal "
        "ORDER BY 1"
    ).fetchall()
    # refuse_late_commit: migration 0005, no write commits after its caller's deadline.
    assert rows == [("refuse_late_commit",), ("set_updated_at",)]


def test_set_updated_at_trigger_advances_updated_at(admin: psycopg.Connection) -> None:
    owner = uuid.uuid4()
    created = admin.execute(
        "INSERT INTO profile.profiles (owner_id) VALUES (%s) RETURNING created_at, updated_at",
        (owner,),
    ).fetchone()
    assert created is not None and created[0] == created[1]
    time.sleep(0.01)
    updated = admin.execute(
        "UPDATE profile.profiles SET age = 30 WHERE owner_id = %s RETURNING created_at, updated_at",
        (owner,),
    ).fetchone()
    assert updated is not None
    assert updated[0] == created[0]
    assert updated[1] > created[1]


def test_purges_search_for_expired_profiles_can_use_the_deleted_at_index(
    admin: psycopg.Connection,
) -> None:
    with admin.transaction():
        # The table is small in tests: make a sequential scan the planner's last resort.
        admin.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(
            row[0]
            for row in admin.execute(
                "EXPLAIN SELECT id FROM profile.profiles "
                "WHERE deleted_at < now() - make_interval(days => 30) ORDER BY deleted_at LIMIT 10"
            ).fetchall()
        )
    assert "profiles_deleted_at_idx" in plan


def test_the_field_table_is_the_tables_columns(admin: psycopg.Connection) -> None:
    """fields.py, from which validation, the mapping and the row's JSON derive, names every
    column of profile.profiles and nothing else."""
    from profile_service.domain.fields import COLUMNS

    columns = admin.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'profile' AND table_name = 'profiles'"
    ).fetchall()
    assert {name for (name,) in columns} == {f.name for f in COLUMNS}


def test_autovacuum_comes_after_a_purge_of_a_fiftieth_of_the_table(
    admin: psycopg.Connection,
) -> None:
    row = admin.execute(
        "SELECT reloptions FROM pg_class WHERE oid = 'profile.profiles'::regclass"
    ).fetchone()
    assert row is not None
    assert set(row[0]) >= {
        "autovacuum_vacuum_scale_factor=0.02",
        "autovacuum_analyze_scale_factor=0.02",
    }
