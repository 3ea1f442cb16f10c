"""Undelete (AIP-164): a soft-deleted profile, not yet purged, becomes active again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

As with soft delete (0001), restoring goes through narrow SECURITY DEFINER functions: an
owner's SELECT still returns only its active profile, and `update_own_profile` still cannot
clear deleted_at. `profile.undelete_own_profile()` restores the caller's own row (users);
`profile.undelete_profile(owner)` restores anyone's (service_role only). Both clear deleted_at
alone: every field comes back as it was; updated_at moves (the trigger), so the etag changes.
On an active profile they raise SQLSTATE PF409 (ALREADY_EXISTS); absent or purged, they return
no row (NOT_FOUND). `profile_api.undelete_profile` is the one statement the service sends:
role and claims, the commit deadline and the etag precondition, then the restore.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_RESTORE = """
          BEGIN
            IF EXISTS (SELECT 1 FROM profile.profiles
                        WHERE owner_id = {owner} AND deleted_at IS NULL) THEN
              RAISE EXCEPTION 'the profile is not deleted' USING ERRCODE = 'PF409';
            END IF;
            RETURN QUERY
              UPDATE profile.profiles SET deleted_at = NULL
               WHERE owner_id = {owner} AND deleted_at IS NOT NULL
              RETURNING *;
          END"""


def upgrade() -> None:
    """The restore functions, the etag lookup for any owner, and the API function."""
    for signature, owner, grantee in (
        ("undelete_own_profile()", "auth.uid()", "authenticated"),
        ("undelete_profile(p_owner uuid)", "p_owner", "service_role"),
    ):
        op.execute(
            f"""
            CREATE FUNCTION profile.{signature} RETURNS SETOF profile.profiles
              LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
              AS $$ {_RESTORE.format(owner=owner)} $$
            """
        )
        name = signature.split("(")[0]
        arguments = "(uuid)" if "p_owner" in signature else "()"
        op.execute(f"REVOKE ALL ON FUNCTION profile.{name}{arguments} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION profile.{name}{arguments} TO {grantee}")
    # The etag of the profile an undelete acts on, locked: a user's own, or (service_role)
    # anyone's; deleted rows included, which their SELECT policies hide from users.
    op.execute(
        """
        CREATE FUNCTION profile.lock_profile_etag(p_owner uuid) RETURNS text
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
            SELECT profile_api.etag(id, updated_at) FROM profile.profiles
             WHERE owner_id = p_owner
               AND (pg_catalog.current_setting('role') = 'service_role'
                    OR p_owner = auth.uid())
               FOR UPDATE
          $$
        """
    )
    op.execute("REVOKE ALL ON FUNCTION profile.lock_profile_etag(uuid) FROM PUBLIC")
    op.execute(
        "GRANT EXECUTE ON FUNCTION profile.lock_profile_etag(uuid) TO authenticated, service_role"
    )
    op.execute(
        """
        CREATE FUNCTION profile_api.undelete_profile(
            p_role text, p_claims text, p_owner uuid, p_commit_by double precision, p_etag text
          ) RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request(p_role, p_claims);
            PERFORM pg_catalog.set_config('request.commit_by', p_commit_by::text, true);
            IF p_etag <> '' AND profile.lock_profile_etag(p_owner) IS DISTINCT FROM p_etag THEN
              RAISE EXCEPTION 'the profile does not have the etag the call requires'
                USING ERRCODE = 'PF412';
            END IF;
            IF p_role = 'service_role' THEN
              RETURN QUERY SELECT * FROM profile.undelete_profile(p_owner);
            ELSE
              RETURN QUERY SELECT * FROM profile.undelete_own_profile();
            END IF;
          END
          $$
        """
    )


def downgrade() -> None:
    """Drop the API function and the restore functions."""
    op.execute(
        "DROP FUNCTION profile_api.undelete_profile(text, text, uuid, double precision, text)"
    )
    op.execute("DROP FUNCTION profile.lock_profile_etag(uuid)")
    op.execute("DROP FUNCTION profile.undelete_profile(uuid)")
    op.execute("DROP FUNCTION profile.undelete_own_profile()")
