"""Etags (AIP-154): every profile has one, and a write may require it, in the same statement.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

`profile_api.etag(id, updated_at)` is a strong entity tag with its quotes: every write moves
updated_at (the set_updated_at trigger), so the tag changes with every write and only then.
The write functions get overloads with a trailing `p_etag`: empty, no precondition; otherwise
the caller's own row is locked and its tag compared before anything is written, so of two
writers holding the same tag exactly one wins (the other waits for the lock, then sees the
new tag). A mismatch, or no row at all, raises SQLSTATE PF412, which the service answers
ABORTED. The comparison reads the row through `profile.own_profile_etag()`, a narrow
SECURITY DEFINER function: an owner's SELECT still returns only its active profile, and a
soft-deleted profile's tag (which SoftDelete returned) can still be matched by a fresh start.
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_CHECK = """
          PERFORM profile_api.begin_request('authenticated', p_claims);
          IF p_etag <> '' AND profile.own_profile_etag() IS DISTINCT FROM p_etag THEN
            RAISE EXCEPTION 'the profile does not have the etag the call requires'
              USING ERRCODE = 'PF412';
          END IF;"""


def upgrade() -> None:
    """profile.etag, the caller's own tag, and the write functions that check it."""
    op.execute(
        """
        CREATE FUNCTION profile_api.etag(p_id uuid, p_updated_at timestamptz) RETURNS text
          LANGUAGE sql IMMUTABLE PARALLEL SAFE
          AS $$
            SELECT '"' || pg_catalog.md5(p_id::text || '/'
                   || (pg_catalog.date_part('epoch', p_updated_at) * 1000000)::int8::text) || '"'
          $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION profile.own_profile_etag() RETURNS text
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
            SELECT profile_api.etag(id, updated_at) FROM profile.profiles
             WHERE owner_id = auth.uid()
               FOR UPDATE
          $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION profile.own_profile_etag() FROM PUBLIC")
    op.execute("GRANT EXECUTE ON FUNCTION profile.own_profile_etag() TO authenticated")
    op.execute(
        f"""
        CREATE FUNCTION profile_api.upsert_profile(
            p_claims text, p_values jsonb, p_mask text[], p_commit_by double precision,
            p_etag text
          ) RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN{_CHECK}
            RETURN QUERY
              SELECT * FROM profile_api.upsert_profile(p_claims, p_values, p_mask, p_commit_by);
          END
          $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION profile_api.soft_delete_profile(
            p_claims text, p_commit_by double precision, p_etag text
          ) RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN{_CHECK}
            RETURN QUERY SELECT * FROM profile_api.soft_delete_profile(p_claims, p_commit_by);
          END
          $$
        """
    )


def downgrade() -> None:
    """Drop the overloads and the etag functions."""
    op.execute("DROP FUNCTION profile_api.soft_delete_profile(text, double precision, text)")
    op.execute(
        "DROP FUNCTION profile_api.upsert_profile(text, jsonb, text[], double precision, text)"
    )
    op.execute("DROP FUNCTION profile.own_profile_etag()")
    op.execute("DROP FUNCTION profile_api.etag(uuid, timestamptz)")
