"""The profile_api functions the service calls: role switch, claims scope, who may use them."""

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests.conftest import ThrowawayDatabase

OWNER = str(uuid.uuid4())
CLAIMS = json.dumps({"sub": OWNER, "role": "authenticated"})


@pytest.fixture
def service_conn(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> Iterator[psycopg.Connection]:
    admin.execute("INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)", (OWNER,))
    with psycopg.connect(test_db.service_url, autocommit=True) as conn:
        yield conn


def test_role_and_claims_last_only_for_the_statement(service_conn: psycopg.Connection) -> None:
    rows = service_conn.execute(
        "SELECT age FROM profile_api.get_profile('authenticated', %s, %s)", (CLAIMS, OWNER)
    ).fetchall()
    assert rows == [(30,)]
    after = service_conn.execute(
        "SELECT current_user, current_setting('request.jwt.claims', true)"
    ).fetchone()
    assert after == ("profile_authenticator", "")


@pytest.mark.parametrize("role", ["postgres", "anon", "profile_authenticator", ""])
def test_only_the_two_api_roles_can_be_asked_for(
    service_conn: psycopg.Connection, role: str
) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not an API role"):
        service_conn.execute(
            "SELECT * FROM profile_api.get_profile(%s, %s, %s)", (role, CLAIMS, OWNER)
        )


def test_a_login_role_outside_the_api_roles_gets_nothing(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    # EXECUTE is PUBLIC: membership in authenticated / service_role is what the role switch needs.
    name = f"stranger_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(name)))
    try:
        admin.execute("INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)", (OWNER,))
        from devtools.database import with_user

        with psycopg.connect(with_user(test_db.admin_url, name, ""), autocommit=True) as conn:
            for role in ("authenticated", "service_role"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="set role"):
                    conn.execute(
                        "SELECT * FROM profile_api.get_profile(%s, %s, %s)", (role, CLAIMS, OWNER)
                    )
    finally:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_user_cannot_upsert_or_soft_delete_as_service_role(
    service_conn: psycopg.Connection,
) -> None:
    # The write functions fix their role: a service_role token's claims get a user's rights
    # only, and without a sub RLS refuses the insert.
    service_claims = json.dumps({"role": "service_role"})
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        service_conn.execute(
            "SELECT * FROM profile_api.upsert_profile(%s, '{}'::jsonb, '{}')", (service_claims,)
        )
    rows = service_conn.execute(
        "SELECT * FROM profile_api.soft_delete_profile(%s)", (service_claims,)
    ).fetchall()
    assert rows == []


def test_purge_below_the_floor_deletes_nothing(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    admin.execute(
        "INSERT INTO profile.profiles (owner_id, deleted_at) "
        "VALUES (%s, now() - interval '5 days')",
        (uuid.uuid4(),),
    )
    # Asked for 1 day, the DELETE policy's 30-day floor still holds.
    assert service_conn.execute(
        "SELECT profile_api.purge_profiles('{}', 1, 100, false)"
    ).fetchone() == (0,)
    assert admin.execute("SELECT count(*) FROM profile.profiles").fetchone() == (2,)


def test_auth_uid_reads_sub_the_way_supabase_does(admin: psycopg.Connection) -> None:
    legacy, modern = str(uuid.uuid4()), str(uuid.uuid4())
    with admin.transaction():
        admin.execute(
            "SELECT set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": modern}),)
        )
        assert admin.execute("SELECT auth.uid()::text").fetchone() == (modern,)
        # The older per-claim setting wins when present, as in Supabase's definition.
        admin.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (legacy,))
        assert admin.execute("SELECT auth.uid()::text").fetchone() == (legacy,)
    assert admin.execute("SELECT auth.uid()").fetchone() == (None,)


_LATE_WRITES = {
    "upsert": "SELECT age FROM profile_api.upsert_profile(%s, '{\"age\": 41}', '{age}', %s)",
    "soft_delete": "SELECT age FROM profile_api.soft_delete_profile(%s, %s)",
}


@pytest.mark.parametrize("write", sorted(_LATE_WRITES))
def test_a_write_past_its_commit_by_is_refused_at_commit(
    service_conn: psycopg.Connection, admin: psycopg.Connection, write: str
) -> None:
    """Migration 0005: the database itself refuses to commit a write after the time the
    service stopped waiting for it, whatever delayed the statement."""
    passed = admin.execute("SELECT extract(epoch FROM clock_timestamp()) - 1").fetchone()
    assert passed is not None
    with pytest.raises(psycopg.errors.QueryCanceled, match="deadline passed before the commit"):
        service_conn.execute(_LATE_WRITES[write], (CLAIMS, float(passed[0])))
    row = admin.execute(
        "SELECT age, deleted_at FROM profile.profiles WHERE owner_id = %s", (OWNER,)
    ).fetchone()
    assert row == (30, None)  # nothing written
    # The same write in time commits.
    service_conn.execute(_LATE_WRITES[write], (CLAIMS, float(passed[0]) + 60))
    row = admin.execute(
        "SELECT age, deleted_at IS NOT NULL FROM profile.profiles WHERE owner_id = %s", (OWNER,)
    ).fetchone()
    assert row == ((41, False) if write == "upsert" else (30, True))


def test_a_purge_past_its_commit_by_deletes_nothing(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    admin.execute(
        "UPDATE profile.profiles SET deleted_at = now() - interval '40 days' WHERE owner_id = %s",
        (OWNER,),
    )
    service_claims = json.dumps({"role": "service_role"})
    purge = "SELECT profile_api.purge_profiles(%s, 30, 10, false, extract(epoch FROM now()) + %s)"
    with pytest.raises(psycopg.errors.QueryCanceled):
        service_conn.execute(purge, (service_claims, -1))
    assert admin.execute("SELECT count(*) FROM profile.profiles").fetchone() == (1,)
    assert service_conn.execute(purge, (service_claims, 60)).fetchone() == (1,)


def test_writes_without_a_commit_by_are_not_checked(admin: psycopg.Connection) -> None:
    """An administrator's write, or the previous release's during a rolling update."""
    admin.execute("INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)", (OWNER,))
    admin.execute("UPDATE profile.profiles SET age = 31 WHERE owner_id = %s", (OWNER,))
    assert admin.execute("SELECT age FROM profile.profiles").fetchone() == (31,)


def test_a_claim_setting_left_on_the_session_cannot_steer_auth_uid(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    """A default or a leftover `request.jwt.claim.sub` (Supabase's auth.uid() reads it before
    the claims) is overridden by the verified claims on every request."""
    other = str(uuid.uuid4())
    other_claims = json.dumps({"sub": other, "role": "authenticated"})
    # OWNER's profile exists (age 30); as if a pooler's previous client left this behind:
    service_conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", (OWNER,))
    rows = service_conn.execute(
        "SELECT owner_id::text, age FROM profile_api.upsert_profile(%s, '{\"age\": 55}', "
        "'{age}', extract(epoch FROM now()) + 60)",
        (other_claims,),
    ).fetchall()
    assert rows == [(other, 55)]  # the other user's own new profile, not OWNER's
    ages = dict(admin.execute("SELECT owner_id::text, age FROM profile.profiles").fetchall())
    assert ages == {OWNER: 30, other: 55}


def test_a_write_whose_etag_does_not_hold_is_refused_by_the_database(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    """Migration 0007: the precondition is checked in the write's own statement."""
    current = admin.execute(
        "SELECT profile_api.etag(id, updated_at) FROM profile.profiles WHERE owner_id = %s",
        (OWNER,),
    ).fetchone()
    assert current is not None and current[0].startswith('"')
    upsert = (
        "SELECT age FROM profile_api.upsert_profile(%s, '{\"age\": 44}', '{age}', "
        "extract(epoch FROM now()) + 60, %s)"
    )
    with pytest.raises(psycopg.DatabaseError) as info:
        service_conn.execute(upsert, (CLAIMS, '"stale"'))
    assert info.value.sqlstate == "PF412"
    assert admin.execute("SELECT age FROM profile.profiles").fetchone() == (30,)
    assert service_conn.execute(upsert, (CLAIMS, current[0])).fetchone() == (44,)


def test_undelete_is_refused_on_an_active_profile_and_restores_a_deleted_one(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    """Migration 0008, as the service's login role: an owner restores its own, all data kept."""
    undelete = (
        "SELECT age, deleted_at FROM profile_api.undelete_profile("
        "'authenticated', %s, %s, extract(epoch FROM now()) + 60, '')"
    )
    with pytest.raises(psycopg.DatabaseError) as info:
        service_conn.execute(undelete, (CLAIMS, OWNER))
    assert info.value.sqlstate == "PF409"
    admin.execute("UPDATE profile.profiles SET deleted_at = now() WHERE owner_id = %s", (OWNER,))
    assert service_conn.execute(undelete, (CLAIMS, OWNER)).fetchall() == [(30, None)]


def test_resealing_writes_only_sealed_values_and_only_for_service_role(
    service_conn: psycopg.Connection, admin: psycopg.Connection
) -> None:
    """Migration 0010: service_role can change `limitations` alone, compare-and-set, and only
    to a value in field_cipher's sealed form; a user cannot call it at all."""
    from profile_service.storage.field_cipher import MARKER

    (profile_id,) = admin.execute(
        "UPDATE profile.profiles SET limitations = 'knee' WHERE owner_id = %s RETURNING id",
        (OWNER,),
    ).fetchone()  # type: ignore[misc]
    reseal = "SELECT * FROM profile_api.reencrypt_limitations('{}', %s::uuid[], %s, %s)"

    def changed(old: str, new: str) -> list[tuple[uuid.UUID]]:
        return service_conn.execute(reseal, ([str(profile_id)], [old], [new])).fetchall()

    assert changed("knee", "plain text") == []  # not sealed: refused
    assert changed("not the current value", MARKER + "v1:k:AAAA") == []  # compare-and-set
    assert changed("knee", MARKER + "v1:k:AAAA") == [(profile_id,)]
    stored = admin.execute(
        "SELECT limitations FROM profile.profiles WHERE owner_id = %s", (OWNER,)
    ).fetchone()
    assert stored == (MARKER + "v1:k:AAAA",)
    with service_conn.transaction():
        service_conn.execute("SET LOCAL ROLE authenticated")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            service_conn.execute(
                "SELECT * FROM profile.reencrypt_limitations(%s::uuid[], %s, %s)",
                ([str(profile_id)], [MARKER + "v1:k:AAAA"], [MARKER + "v1:k:BBBB"]),
            )
