"""Row-level security at SQL level, as the service's login role sees it.

The connection logs in as the service's NOINHERIT login role; each cell is one transaction
that switches role and claims the way the profile_api functions do (set_config(..., true)),
then runs a plain statement, so every policy and grant is exercised directly.
"""

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import ThrowawayDatabase

OWNER = uuid.UUID("00000000-0000-4000-8000-00000000000a")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000000b")
THIRD = uuid.UUID("00000000-0000-4000-8000-00000000000c")

# Seeds, written by the administrator before each cell.
ACTIVE = "owner and other both have active profiles"
DELETED = "owner's profile was soft-deleted a day ago"
EXPIRED = "owner's was soft-deleted 31 days ago, other's a day ago"
EMPTY = "no profiles"

# Outcomes: an int is rows seen or changed; these strings are errors.
DENIED = "permission denied"
RLS = "violates row-level security"

# Actors: (database role or None for "no SET ROLE", claims or None for "no claims").
ACTORS: dict[str, tuple[str | None, dict[str, Any] | None]] = {
    "owner": ("authenticated", {"sub": str(OWNER), "role": "authenticated"}),
    "other user": ("authenticated", {"sub": str(OTHER), "role": "authenticated"}),
    "service_role": ("service_role", {"role": "service_role"}),
    "no claims": ("authenticated", None),
    "no role switch": (None, None),
}


def _own(actor: str) -> uuid.UUID:
    return OTHER if actor == "other user" else OWNER


def _another(actor: str) -> uuid.UUID:
    return OTHER if actor == "owner" else OWNER


# column -> (seed, statement, parameters for the acting user)
# fmt: off
COLUMNS: dict[str, tuple[str, str, Callable[[str], tuple[Any, ...]]]] = {
    "select active": (ACTIVE, "SELECT * FROM profile.profiles WHERE owner_id = %s",
                      lambda a: (OWNER,)),
    "select soft-deleted": (DELETED, "SELECT * FROM profile.profiles WHERE owner_id = %s",
                            lambda a: (OWNER,)),
    "insert own": (EMPTY, "INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)",
                   lambda a: (_own(a),)),
    "insert for another owner": (
        EMPTY, "INSERT INTO profile.profiles (owner_id, age) VALUES (%s, 30)", lambda a: (THIRD,)),
    "update own": (ACTIVE, "UPDATE profile.profiles SET age = 41 WHERE owner_id = %s",
                   lambda a: (_own(a),)),
    "update another's": (ACTIVE, "UPDATE profile.profiles SET age = 41 WHERE owner_id = %s",
                         lambda a: (_another(a),)),
    "soft-delete own": (ACTIVE, "SELECT * FROM profile.soft_delete_own_profile()",
                        lambda a: ()),
    "soft-delete by plain UPDATE": (
        ACTIVE, "UPDATE profile.profiles SET deleted_at = now() WHERE owner_id = %s",
        lambda a: (_own(a),)),
    "restore own": (DELETED, "UPDATE profile.profiles SET deleted_at = NULL WHERE owner_id = %s",
                    lambda a: (OWNER,)),
    "undelete own": (DELETED, "SELECT * FROM profile.undelete_own_profile()", lambda a: ()),
    "undelete anyone's": (DELETED, "SELECT * FROM profile.undelete_profile(%s)",
                          lambda a: (OWNER,)),
    "edit own soft-deleted": (DELETED, "UPDATE profile.profiles SET age = 1 WHERE owner_id = %s",
                              lambda a: (OWNER,)),
    "delete active": (ACTIVE, "DELETE FROM profile.profiles WHERE owner_id = %s",
                      lambda a: (OWNER,)),
    "purge expired": (EXPIRED, "DELETE FROM profile.profiles WHERE deleted_at IS NOT NULL",
                      lambda a: ()),
}

# The matrix. Read across a row: what that actor can do.
MATRIX: dict[str, dict[str, int | str]] = {
    "owner": {
        "select active": 1, "select soft-deleted": 0, "insert own": 1,
        "insert for another owner": RLS, "update own": 1, "update another's": 0,
        "soft-delete own": 1, "soft-delete by plain UPDATE": DENIED, "restore own": DENIED,
        "undelete own": 1, "undelete anyone's": DENIED,
        "edit own soft-deleted": 0, "delete active": DENIED, "purge expired": DENIED,
    },
    "other user": {
        "select active": 0, "select soft-deleted": 0, "insert own": 1,
        "insert for another owner": RLS, "update own": 1, "update another's": 0,
        "soft-delete own": 1, "soft-delete by plain UPDATE": DENIED, "restore own": DENIED,
        "undelete own": 0, "undelete anyone's": DENIED,
        "edit own soft-deleted": 0, "delete active": DENIED, "purge expired": DENIED,
    },
    "service_role": {
        "select active": 1, "select soft-deleted": 1, "insert own": DENIED,
        "insert for another owner": DENIED, "update own": DENIED, "update another's": DENIED,
        "soft-delete own": DENIED, "soft-delete by plain UPDATE": DENIED, "restore own": DENIED,
        "undelete own": DENIED, "undelete anyone's": 1,
        "edit own soft-deleted": DENIED, "delete active": 0, "purge expired": 1,
    },
    "no claims": {
        "select active": 0, "select soft-deleted": 0, "insert own": RLS,
        "insert for another owner": RLS, "update own": 0, "update another's": 0,
        "soft-delete own": 0, "soft-delete by plain UPDATE": DENIED, "restore own": DENIED,
        "undelete own": 0, "undelete anyone's": DENIED,
        "edit own soft-deleted": 0, "delete active": DENIED, "purge expired": DENIED,
    },
    "no role switch": dict.fromkeys(COLUMNS, DENIED),
}
# fmt: on


def _seed(admin: psycopg.Connection, seed: str) -> None:
    rows: list[tuple[uuid.UUID, str | None]] = {
        ACTIVE: [(OWNER, None), (OTHER, None)],
        DELETED: [(OWNER, "1 day")],
        EXPIRED: [(OWNER, "31 days"), (OTHER, "1 day")],
        EMPTY: [],
    }[seed]
    for owner, deleted_ago in rows:
        admin.execute(
            "INSERT INTO profile.profiles (owner_id, age, deleted_at) VALUES (%s, 30, "
            "now() - %s::interval)",
            (owner, deleted_ago),
        )


def _act(conn: psycopg.Connection, actor: str, statement: str, params: tuple[Any, ...]) -> int:
    role, claims = ACTORS[actor]
    with conn.transaction():
        if role is not None:
            conn.execute(
                "SELECT set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                (role, json.dumps(claims) if claims else ""),
            )
        return conn.execute(statement, params).rowcount


@pytest.fixture
def service_conn(test_db: ThrowawayDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(test_db.service_url, autocommit=True) as conn:
        yield conn


CELLS = [(actor, column) for actor in MATRIX for column in COLUMNS]


@pytest.mark.parametrize(("actor", "column"), CELLS, ids=[f"{a}: {c}" for a, c in CELLS])
def test_rls_matrix(
    admin: psycopg.Connection, service_conn: psycopg.Connection, actor: str, column: str
) -> None:
    seed, statement, params = COLUMNS[column]
    _seed(admin, seed)
    expected = MATRIX[actor][column]
    if isinstance(expected, int):
        assert _act(service_conn, actor, statement, params(actor)) == expected
    else:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match=expected):
            _act(service_conn, actor, statement, params(actor))
    # Whatever happened, the connection is clean for the next request.
    assert service_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_soft_delete_own_touches_only_the_callers_profile(
    admin: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    _seed(admin, ACTIVE)
    _act(service_conn, "other user", "SELECT * FROM profile.soft_delete_own_profile()", ())
    states = dict(
        admin.execute("SELECT owner_id, deleted_at IS NOT NULL FROM profile.profiles").fetchall()
    )
    assert states == {OWNER: False, OTHER: True}


def test_purge_deletes_only_rows_past_the_30_day_floor(
    admin: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    _seed(admin, EXPIRED)
    _act(service_conn, "service_role", "DELETE FROM profile.profiles", ())
    remaining = admin.execute("SELECT owner_id FROM profile.profiles").fetchall()
    assert remaining == [(OTHER,)]


def test_restart_own_deleted_profile_wipes_the_old_data(
    admin: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    _seed(admin, DELETED)
    admin.execute(
        "UPDATE profile.profiles SET limitations = 'knee surgery' WHERE owner_id = %s", (OWNER,)
    )
    _act(service_conn, "owner", "SELECT profile.restart_own_deleted_profile()", ())
    row = admin.execute(
        "SELECT age, limitations, deleted_at, created_at > now() - interval '1 minute' "
        "FROM profile.profiles WHERE owner_id = %s",
        (OWNER,),
    ).fetchone()
    assert row == (None, None, None, True)


def test_settings_do_not_outlive_their_transaction(
    admin: psycopg.Connection, service_conn: psycopg.Connection
) -> None:
    _seed(admin, ACTIVE)
    assert _act(service_conn, "owner", "SELECT * FROM profile.profiles", ()) == 1
    row = service_conn.execute(
        "SELECT current_user, nullif(current_setting('request.jwt.claims', true), ''), "
        "current_setting('statement_timeout')"
    ).fetchone()
    assert row == ("profile_authenticator", None, "0")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        service_conn.execute("SELECT * FROM profile.profiles")


def test_service_login_role_has_no_privilege_of_its_own(test_db: ThrowawayDatabase) -> None:
    with psycopg.connect(test_db.service_url) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls, rolinherit FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
    assert row == (False, False, False)
