"""`profile-service reencrypt`: seal with the current key every `limitations` value that is not
sealed with it yet (plaintext from before the keys were set, or sealed with an older key).

In batches in `id` order, each batch one read and one compare-and-set write (migration 0010),
so it is safe beside live traffic (a value a call wrote meanwhile is left as the call wrote
it), and resumable: a run that stops leaves every row either as it was or resealed, and the
next run finds only what is left. Decision 17.
"""

import json
import logging
from dataclasses import dataclass

import psycopg

from profile_service.storage.field_cipher import FieldCipher, Undecryptable, is_sealed

_LOGGER = logging.getLogger(__name__)
# The field the database's re-encryption functions are for (a test holds it to fields.SEALED).
FIELD = "limitations"
_CLAIMS = json.dumps({"role": "service_role"})
_BEFORE_ANY_ID = "00000000-0000-0000-0000-000000000000"


@dataclass
class Counts:
    """What a run did (or, with dry_run, would do)."""

    encrypted: int = 0  # plaintext, now sealed
    rotated: int = 0  # sealed with an older key, now with the current one
    changed_meanwhile: int = 0  # written by a call between the read and the write: left alone
    undecryptable: int = 0  # a key not configured, or failing authentication: left alone

    def summary(self, dry_run: bool) -> str:
        """One line for people."""
        verb = "would reencrypt" if dry_run else "reencrypted"
        return (
            f"{verb}: {self.encrypted} from plaintext, {self.rotated} from older keys; "
            f"{self.changed_meanwhile} changed meanwhile (left as written); "
            f"{self.undecryptable} undecryptable"
        )


def reencrypt(database_url: str, cipher: FieldCipher, *, batch_size: int, dry_run: bool) -> Counts:
    """Reseal every value of FIELD not sealed with `cipher`'s current key; raise psycopg.Error
    if the database fails (what was done stays done)."""
    prefix = cipher.current_prefix
    if prefix is None:
        raise ValueError("no encryption key to seal with")
    counts = Counts()
    after = _BEFORE_ANY_ID
    # Never a prepared statement: DATABASE_URL may lead through PgBouncer in transaction mode.
    with psycopg.connect(database_url, autocommit=True, prepare_threshold=None) as conn:
        while True:
            rows = conn.execute(
                "SELECT id::text, owner_id::text, limitations"
                " FROM profile_api.reencrypt_candidates(%s, %s, %s, %s)",
                (_CLAIMS, after, batch_size, prefix),
            ).fetchall()
            if not rows:
                return counts
            after = rows[-1][0]
            ids, old, new, was_sealed = [], [], [], {}
            for profile_id, owner_id, stored in rows:
                try:
                    plaintext = cipher.open(FIELD, owner_id, stored)
                except Undecryptable as exc:
                    _LOGGER.error("profile %s: %s cannot be decrypted (%s)", profile_id, FIELD, exc)
                    counts.undecryptable += 1
                    continue
                ids.append(profile_id)
                old.append(stored)
                new.append(cipher.seal(FIELD, owner_id, plaintext))
                was_sealed[profile_id] = is_sealed(stored)
            if dry_run:
                changed = ids
            elif ids:
                changed = [
                    str(row[0])
                    for row in conn.execute(
                        "SELECT * FROM profile_api.reencrypt_limitations(%s, %s::uuid[], %s, %s)",
                        (_CLAIMS, ids, old, new),
                    )
                ]
            else:
                changed = []
            counts.changed_meanwhile += len(ids) - len(changed)
            for profile_id in changed:
                if was_sealed[profile_id]:
                    counts.rotated += 1
                else:
                    counts.encrypted += 1
