"""`limitations` sealed at rest (PROFILE_ENCRYPTION_KEYS, decision 17), against a real server
and database: what the table holds, what opens it, rotation, `reencrypt` beside live writes,
and the failures, with no key material or health data in any log or error."""

import base64
import os
import subprocess
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import psycopg
import pytest

from profile_service.storage.field_cipher import MARKER, FieldCipher
from profile_service.v1 import profile_service_pb2 as pb
from profile_service.v1 import profile_service_pb2_grpc as pb_grpc
from tests.conftest import ThrowawayDatabase
from tests.e2e.conftest import error_reason, rpc_error, server_env, service, serving, user
from tests.e2e.probes import free_port
from tests.e2e.serve_process import CLI

OLD = ("k1", os.urandom(32))
NEW = ("k2", os.urandom(32))
TEXT = "left knee: no deep squats; asthma"


def _setting(*keys: tuple[str, bytes]) -> str:
    return ",".join(f"{name}:{base64.b64encode(key).decode()}" for name, key in keys)


@contextmanager
def _server(
    test_db: ThrowawayDatabase, *keys: tuple[str, bytes]
) -> Iterator[pb_grpc.ProfileServiceStub]:
    """A server with `keys` (none: PROFILE_ENCRYPTION_KEYS unset)."""
    overrides = {"PROFILE_ENCRYPTION_KEYS": _setting(*keys)} if keys else {}
    with serving(server_env(test_db.service_url, **overrides)) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel)


def _upsert(stub: pb_grpc.ProfileServiceStub, sub: str, text: str, **fields: object) -> pb.Profile:
    profile = pb.Profile(limitations=text, **fields)  # type: ignore[arg-type]
    return stub.Upsert(pb.UpsertRequest(profile=profile), metadata=user(sub), timeout=10)


def _get(stub: pb_grpc.ProfileServiceStub, sub: str) -> pb.Profile:
    return stub.Get(pb.GetRequest(), metadata=user(sub), timeout=10)


def _stored(admin: psycopg.Connection, sub: str) -> str:
    """The column as the database holds it, read as superuser."""
    row = admin.execute(
        "SELECT limitations FROM profile.profiles WHERE owner_id = %s", (sub,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def _table(admin: psycopg.Connection) -> dict[str, tuple[str, object]]:
    """Every profile's stored limitations and updated_at, by owner, read as superuser."""
    rows = admin.execute(
        "SELECT owner_id::text, limitations, updated_at FROM profile.profiles"
    ).fetchall()
    return {owner: (limitations, updated_at) for owner, limitations, updated_at in rows}


def _no_secrets_in(text: str, *keys: tuple[str, bytes]) -> None:
    assert TEXT not in text
    for _, key in keys:
        assert base64.b64encode(key).decode() not in text


def test_the_table_holds_only_ciphertext_and_every_rpc_shows_plaintext(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    sub = str(uuid.uuid4())
    with _server(test_db, NEW) as stub:
        written = _upsert(stub, sub, TEXT, age=30)
        assert written.limitations == TEXT
        stored = _stored(admin, sub)
        assert stored.startswith(f"{MARKER}v1:{NEW[0]}:")
        assert "knee" not in stored and TEXT not in stored
        assert _get(stub, sub).limitations == TEXT
        batch = stub.BatchGetProfiles(
            pb.BatchGetProfilesRequest(owner_ids=[sub]), metadata=service(), timeout=10
        )
        assert [p.limitations for p in batch.profiles] == [TEXT]
        # A masked Upsert that leaves limitations alone keeps its ciphertext, byte for byte.
        request = pb.UpsertRequest(profile=pb.Profile(age=31))
        request.update_mask.paths.append("age")
        assert stub.Upsert(request, metadata=user(sub), timeout=10).limitations == TEXT
        assert _stored(admin, sub) == stored
        deleted = stub.SoftDelete(pb.SoftDeleteRequest(), metadata=user(sub), timeout=10)
        assert deleted.limitations == TEXT
        restored = stub.Undelete(pb.UndeleteRequest(), metadata=user(sub), timeout=10)
        assert restored.limitations == TEXT
        # The limit is the plaintext's: 2,000 characters fit, sealed or not.
        assert _upsert(stub, sub, "é" * 2000).limitations == "é" * 2000


def test_ciphertext_copied_into_another_owners_row_does_not_open_there(
    test_db: ThrowawayDatabase, admin: psycopg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    victim, thief = str(uuid.uuid4()), str(uuid.uuid4())
    with _server(test_db, NEW) as stub:
        _upsert(stub, victim, TEXT)
        _upsert(stub, thief, "none")
        admin.execute(
            "UPDATE profile.profiles SET limitations = %s WHERE owner_id = %s",
            (_stored(admin, victim), thief),
        )
        error = rpc_error(lambda: _get(stub, thief))
        assert error.code() == grpc.StatusCode.INTERNAL
        assert error_reason(error)[0] == "UNDECRYPTABLE_FIELD"
        _no_secrets_in(error.details() or "", NEW)
        assert _get(stub, victim).limitations == TEXT  # nothing else breaks
        # Its owner can write the field afresh, which mends the row.
        assert _upsert(stub, thief, "back pain").limitations == "back pain"
    (thief_id,) = admin.execute(
        "SELECT id FROM profile.profiles WHERE owner_id = %s", (thief,)
    ).fetchone()  # type: ignore[misc]
    logged = [r.getMessage() for r in caplog.records if "cannot be decrypted" in r.getMessage()]
    assert logged == [
        f"profile {thief_id}: field limitations cannot be decrypted "
        f"(key '{NEW[0]}': authentication failed)"
    ]
    _no_secrets_in(caplog.text, NEW)


def test_rows_written_before_the_keys_and_under_an_old_key_are_read_after_a_rotation(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    clear, sealed_old = str(uuid.uuid4()), str(uuid.uuid4())
    with _server(test_db) as stub:
        _upsert(stub, clear, TEXT)
    assert _stored(admin, clear) == TEXT  # no keys: in clear, as before
    with _server(test_db, OLD) as stub:
        _upsert(stub, sealed_old, "old " + TEXT)
        assert _get(stub, clear).limitations == TEXT  # plaintext keeps being served
    with _server(test_db, NEW, OLD) as stub:  # the new key first, the old one second
        assert _get(stub, sealed_old).limitations == "old " + TEXT
        assert _get(stub, clear).limitations == TEXT
        _upsert(stub, clear, "new " + TEXT)
        assert _stored(admin, clear).startswith(f"{MARKER}v1:{NEW[0]}:")
    with _server(test_db, NEW) as stub:  # the old key dropped too early
        error = rpc_error(lambda: _get(stub, sealed_old))
        assert (error.code(), error_reason(error)[0]) == (
            grpc.StatusCode.INTERNAL,
            "UNDECRYPTABLE_FIELD",
        )
        assert _get(stub, clear).limitations == "new " + TEXT  # other rows keep working


def _reencrypt(
    test_db: ThrowawayDatabase, *args: str, keys: str, database_url: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "JWT_SECRET")}
    env.update(DATABASE_URL=database_url or test_db.service_url, PROFILE_ENCRYPTION_KEYS=keys)
    return subprocess.run(
        [CLI, "reencrypt", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_reencrypt_converts_a_mixed_table_while_upserts_run_and_loses_none(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    # 300 rows in clear (from before the keys) and 300 under the old key.
    owners = [str(uuid.uuid4()) for _ in range(600)]
    old = FieldCipher([OLD])
    with admin.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO profile.profiles (owner_id, limitations) VALUES (%s, %s)",
            [
                (owner, f"{i} {TEXT}" if i < 300 else old.seal("limitations", owner, f"{i} {TEXT}"))
                for i, owner in enumerate(owners)
            ],
        )
    before = _table(admin)
    dry = _reencrypt(test_db, "--dry-run", keys=_setting(NEW, OLD))
    assert dry.returncode == 0, dry.stderr
    assert "would reencrypt: 300 from plaintext, 300 from older keys" in dry.stdout
    assert _table(admin) == before  # a dry run changes nothing, updated_at included
    # Every tenth owner writes while reencrypt runs, on a server with the new keys.
    writers = owners[::10]
    with _server(test_db, NEW, OLD) as stub:
        stop = threading.Event()
        written: dict[str, str] = {}

        def write() -> None:
            round_ = 0
            while not stop.is_set() or round_ < 2:
                for owner in writers:
                    text = f"round {round_} of {owner}"
                    _upsert(stub, owner, text)
                    written[owner] = text
                round_ += 1

        thread = threading.Thread(target=write)
        thread.start()
        try:
            result = _reencrypt(test_db, "--batch-size", "50", keys=_setting(NEW, OLD))
        finally:
            stop.set()
            thread.join()
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("reencrypted: ")
        _no_secrets_in(result.stdout + result.stderr, NEW, OLD)
        # None lost: each writer reads what it wrote last, everyone else what they had.
        for i, owner in enumerate(owners):
            expected = written[owner] if owner in writers else f"{i} {TEXT}"
            assert _get(stub, owner).limitations == expected
    # Every value is now sealed with the new key, and every row was written: resealed (which
    # moves updated_at, and so the etag, as every UPDATE does) or upserted.
    after = _table(admin)
    assert all(value.startswith(f"{MARKER}v1:{NEW[0]}:") for value, _ in after.values())
    assert {owner for owner in owners if after[owner][1] != before[owner][1]} == set(owners)
    # Done is done: a second run finds nothing left.
    again = _reencrypt(test_db, keys=_setting(NEW, OLD))
    assert (
        again.returncode == 0 and "reencrypted: 0 from plaintext, 0 from older keys" in again.stdout
    )


def test_reencrypt_leaves_and_reports_what_it_cannot_decrypt(
    test_db: ThrowawayDatabase, admin: psycopg.Connection
) -> None:
    lost, fine = str(uuid.uuid4()), str(uuid.uuid4())
    sealed = FieldCipher([OLD]).seal("limitations", lost, TEXT)
    admin.execute(
        "INSERT INTO profile.profiles (owner_id, limitations) VALUES (%s, %s), (%s, %s)",
        (lost, sealed, fine, TEXT),
    )
    result = _reencrypt(test_db, keys=_setting(NEW))  # the old key is not configured
    assert result.returncode == 1
    assert "reencrypted: 1 from plaintext, 0 from older keys" in result.stdout
    assert "1 undecryptable" in result.stdout
    (lost_id,) = admin.execute(
        "SELECT id FROM profile.profiles WHERE owner_id = %s", (lost,)
    ).fetchone()  # type: ignore[misc]
    assert (
        f"profile {lost_id}: limitations cannot be decrypted (key 'k1': key not configured)"
        in result.stderr
    )
    assert _stored(admin, lost) == sealed  # left as it was
    _no_secrets_in(result.stdout + result.stderr, NEW, OLD)


def test_reencrypt_against_an_unreachable_database_fails_with_exit_1_and_says_why(
    test_db: ThrowawayDatabase,
) -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/profiles?connect_timeout=2"
    result = _reencrypt(test_db, keys=_setting(NEW), database_url=nowhere)
    assert result.returncode == 1
    assert result.stderr.strip() == "reencrypt failed: database error OperationalError"
    _no_secrets_in(result.stdout + result.stderr, NEW)


def test_a_malformed_keys_setting_stops_serve_and_reencrypt_naming_it_and_nothing_more(
    test_db: ThrowawayDatabase,
) -> None:
    bad = f"{NEW[0]}:{base64.b64encode(NEW[1][:20]).decode()}"
    for command in ("serve", "reencrypt"):
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env.update(server_env(test_db.service_url, PROFILE_ENCRYPTION_KEYS=bad))
        result = subprocess.run(
            [CLI, command], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 2, (command, result.stderr)
        faults = [line for line in result.stderr.splitlines() if "PROFILE_ENCRYPTION_KEYS" in line]
        assert faults == ["  PROFILE_ENCRYPTION_KEYS key 'k2' must be 32 bytes, got 20"], command
        assert base64.b64encode(NEW[1][:20]).decode() not in result.stderr
