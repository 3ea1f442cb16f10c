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
  write none): it changes `limitations` alone, and only to a sealed value (one that starts
  with the service's U+FDD0 marker), so it cannot put plaintext or anything else there;
- like every UPDATE, it moves updated_at (the contract's `set_updated_at`), so a resealed
  profile has a new etag: a caller holding the old one reads the profile again.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """The resealing function and the two API functions."""
    op.execute(
        """
        CREATE FUNCTION profile.reencrypt_limitations(p_ids uuid[], p_old text[], p_new text[])
          RETURNS SETOF uuid
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
            UPDATE profile.profiles AS p SET limitations = c.new_value
              FROM ROWS FROM (pg_catalog.unnest(p_ids), pg_catalog.unnest(p_old),
                              pg_catalog.unnest(p_new)) AS c(id, old_value, new_value)
             WHERE p.id = c.id AND p.limitations = c.old_value
               AND pg_catalog.starts_with(c.new_value, pg_catalog.chr(64976))  -- U+FDD0
            RETURNING p.id
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
    """Drop the functions."""
    op.execute("DROP FUNCTION profile_api.reencrypt_limitations(text, uuid[], text[], text[])")
    op.execute("DROP FUNCTION profile_api.reencrypt_candidates(text, uuid, integer, text)")
    op.execute("DROP FUNCTION profile.reencrypt_limitations(uuid[], text[], text[])")
