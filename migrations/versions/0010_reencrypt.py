"""Re-encryption of `limitations` (PROFILE_ENCRYPTION_KEYS, decision 17).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

The service seals `limitations` in Python; the database only ever sees the sealed text, and
never a key. `profile-service reencrypt` reads the values not sealed with the current key
(`profile_api.reencrypt_candidates`) and writes each back resealed
(`profile_api.reencrypt_limitations`, which returns the ids it changed), both as service_role:

- a compare-and-set: a value changed by a call meanwhile is left as that call wrote it;
- through a narrow SECURITY DEFINER function (service_role may read every profile, and
  write none);
- without moving updated_at (so the etag stays): the stored form changed, the profile did not.
  The trigger keeps updated_at while the transaction-local `profile.reencrypting` is on, which
  only that function sets.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_TRIGGER = """
    CREATE OR REPLACE FUNCTION profile.set_updated_at() RETURNS trigger
      LANGUAGE plpgsql
      AS $$
      BEGIN
        {body}
        RETURN NEW;
      END
      $$
"""
_KEEP_WHILE_REENCRYPTING = """
        IF pg_catalog.current_setting('profile.reencrypting', true) = 'on' THEN
          NEW.updated_at := OLD.updated_at;
        ELSE
          NEW.updated_at := now();
        END IF;"""


def upgrade() -> None:
    """The trigger's exception, the resealing function and the two API functions."""
    op.execute(_TRIGGER.format(body=_KEEP_WHILE_REENCRYPTING))
    op.execute(
        """
        CREATE FUNCTION profile.reencrypt_limitations(p_ids uuid[], p_old text[], p_new text[])
          RETURNS SETOF uuid
          LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
          BEGIN
            PERFORM pg_catalog.set_config('profile.reencrypting', 'on', true);
            RETURN QUERY
              UPDATE profile.profiles AS p SET limitations = c.new_value
                FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_old),
                               pg_catalog.unnest(p_new)) AS c(id, old_value, new_value)
               WHERE p.id = c.id AND p.limitations = c.old_value
              RETURNING p.id;
            PERFORM pg_catalog.set_config('profile.reencrypting', 'off', true);
          END
          $$
        """
    )
    op.execute(
        "REVOKE ALL ON FUNCTION profile.reencrypt_limitations(uuid[], text[], text[]) FROM PUBLIC"
    )
    op.execute(
        "GRANT EXECUTE ON FUNCTION profile.reencrypt_limitations(uuid[], text[], text[]) "
        "TO service_role"
    )
    op.execute(
        """
        CREATE FUNCTION profile_api.reencrypt_candidates(
            p_claims text, p_after uuid, p_limit integer, p_current_prefix text
          ) RETURNS TABLE (id uuid, owner_id uuid, limitations text)
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request('service_role', p_claims);
            RETURN QUERY
              SELECT p.id, p.owner_id, p.limitations FROM profile.profiles AS p
               WHERE p.id > p_after AND p.limitations IS NOT NULL
                 AND NOT pg_catalog.starts_with(p.limitations, p_current_prefix)
               ORDER BY p.id
               LIMIT p_limit;
          END
          $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION profile_api.reencrypt_limitations(
            p_claims text, p_ids uuid[], p_old text[], p_new text[]
          ) RETURNS SETOF uuid
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request('service_role', p_claims);
            RETURN QUERY SELECT * FROM profile.reencrypt_limitations(p_ids, p_old, p_new);
          END
          $$
        """
    )


def downgrade() -> None:
    """Drop the functions; the trigger moves updated_at on every update again."""
    op.execute("DROP FUNCTION profile_api.reencrypt_limitations(text, uuid[], text[], text[])")
    op.execute("DROP FUNCTION profile_api.reencrypt_candidates(text, uuid, integer, text)")
    op.execute("DROP FUNCTION profile.reencrypt_limitations(uuid[], text[], text[])")
    op.execute(_TRIGGER.format(body="NEW.updated_at := now();"))
