"""Sealing a field at rest (storage/field_cipher.py): what is stored, what opens it, what does
not; the setting that names the keys (config.py). No database."""

import base64
import os
import uuid

import pytest

from profile_service.domain import fields
from profile_service.domain.validation import check_fields
from profile_service.runtime.config import ConfigError, Settings
from profile_service.storage import reencrypt
from profile_service.storage.field_cipher import MARKER, FieldCipher, Undecryptable, is_sealed

OLD = ("k2026a", os.urandom(32))
NEW = ("k2026b", os.urandom(32))
OWNER = str(uuid.uuid4())
TEXT = "left knee: no deep squats; asthma"


def test_a_sealed_value_names_its_key_hides_the_text_and_opens_again() -> None:
    cipher = FieldCipher([NEW, OLD])
    stored = cipher.seal("limitations", OWNER, TEXT)
    assert stored.startswith(f"{MARKER}v1:{NEW[0]}:") and is_sealed(stored)
    assert "knee" not in stored
    assert stored != cipher.seal("limitations", OWNER, TEXT)  # a fresh nonce every time
    assert cipher.open("limitations", OWNER, stored) == TEXT
    assert cipher.open("limitations", OWNER.upper(), stored) == TEXT  # the owner, canonical


def test_a_value_opens_only_for_its_own_owner_and_field() -> None:
    cipher = FieldCipher([NEW])
    stored = cipher.seal("limitations", OWNER, TEXT)
    with pytest.raises(Undecryptable, match="authentication failed"):
        cipher.open("limitations", str(uuid.uuid4()), stored)
    with pytest.raises(Undecryptable, match="authentication failed"):
        cipher.open("primary_goal", OWNER, stored)
    tampered = stored[:-6] + ("A" if stored[-6] != "A" else "B") + stored[-5:]
    with pytest.raises(Undecryptable, match="authentication failed"):
        cipher.open("limitations", OWNER, tampered)


def test_after_a_rotation_the_old_key_opens_and_the_new_one_seals() -> None:
    before = FieldCipher([OLD]).seal("limitations", OWNER, TEXT)
    rotated = FieldCipher([NEW, OLD])
    assert rotated.open("limitations", OWNER, before) == TEXT
    assert rotated.current_prefix == f"{MARKER}v1:{NEW[0]}:"
    with pytest.raises(Undecryptable, match="key 'k2026a': key not configured") as info:
        FieldCipher([NEW]).open("limitations", OWNER, before)
    assert info.value.key_name == OLD[0]


def test_without_keys_values_are_stored_in_clear_and_plaintext_reads_as_itself() -> None:
    clear = FieldCipher(())
    assert not clear.seals and clear.current_prefix is None
    assert clear.seal("limitations", OWNER, TEXT) == TEXT
    assert FieldCipher([NEW]).open("limitations", OWNER, TEXT) == TEXT  # a row from before


def test_no_caller_can_write_a_value_that_reads_as_sealed() -> None:
    violations = check_fields({"limitations": MARKER + "v1:k:AAAA"})
    assert [v.field for v in violations] == ["profile.limitations"]
    assert "noncharacters" in violations[0].description


def test_the_sealed_fields_are_the_ones_reencrypt_has_database_functions_for() -> None:
    # A new sealed field needs its own reencrypt functions (migration 0010 has limitations').
    assert fields.SEALED == (reencrypt.FIELD,)


def _env(keys: str) -> dict[str, str]:
    return {
        "DATABASE_URL": "postgresql://x",
        "JWT_SECRET": "s" * 32,
        "PROFILE_ENCRYPTION_KEYS": keys,
    }


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_the_keys_setting_is_read_in_order_and_never_shown() -> None:
    settings = Settings.from_env(_env(f"{NEW[0]}:{_b64(NEW[1])}, {OLD[0]}:{_b64(OLD[1])}"))
    assert settings.encryption_keys == (NEW, OLD)
    assert _b64(NEW[1]) not in repr(settings) and str(NEW[1]) not in repr(settings)
    assert Settings.from_env({**_env(""), "PROFILE_ENCRYPTION_KEYS": ""}).encryption_keys == ()


@pytest.mark.parametrize(
    ("value", "fault"),
    [
        ("k1:not*base64!", "key 'k1' is not base64"),
        (f"k1:{_b64(os.urandom(16))}", "key 'k1' must be 32 bytes, got 16"),
        (f"k1:{_b64(OLD[1])},k1:{_b64(NEW[1])}", "key name 'k1' appears twice"),
        (f":{_b64(OLD[1])}", "entry 1 is not name:base64key"),
        (f"k1:{_b64(OLD[1])},{_b64(NEW[1])}", "entry 2 is not name:base64key"),
        (f"a b:{_b64(OLD[1])}", "entry 1: a key name is 1 to 64 of"),
    ],
)
def test_a_malformed_keys_setting_is_refused_without_echoing_key_material(
    value: str, fault: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(_env(value))
    message = str(info.value)
    assert f"PROFILE_ENCRYPTION_KEYS {fault}" in message
    for part in value.replace(",", ":").split(":"):
        if len(part) >= 16:  # key material, good or bad
            assert part not in message
