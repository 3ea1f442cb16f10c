"""One function per RPC, so each request is a single statement: one round trip, no pipeline.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

Each function first calls `profile_api.begin_request`, which switches to the caller's API role
and sets the verified claims with `set_config(..., true)`: both last until the end of the
statement's own (implicit) transaction, exactly like PostgREST's pre-request settings. The
statements after it run as that role, so RLS and the table grants decide what they see. The
functions are SECURITY INVOKER: a login role can only switch to roles it is a member of, so
EXECUTE is granted to PUBLIC and membership in `authenticated` / `service_role` stays the
boundary. (SET ROLE is refused inside SECURITY DEFINER functions; an invoker function may.)
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_FIELDS = (
    "age",
    "sex",
    "height_cm",
    "weight_kg",
    "experience_level",
    "limitations",
    "primary_goal",
    "available_equipment",
    "session_length",
    "generation_params",
)


def upgrade() -> None:
    """Create schema profile_api and its functions."""
    op.execute("CREATE SCHEMA profile_api")
    op.execute("GRANT USAGE ON SCHEMA profile_api TO PUBLIC")
    op.execute(
        """
        CREATE FUNCTION profile_api.begin_request(p_role text, p_claims text) RETURNS void
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            IF p_role IS DISTINCT FROM 'authenticated' AND p_role IS DISTINCT FROM 'service_role'
            THEN
              RAISE EXCEPTION 'role % is not an API role', p_role
                USING ERRCODE = 'insufficient_privilege';
            END IF;
            PERFORM set_config('role', p_role, true);
            PERFORM set_config('request.jwt.claims', p_claims, true);
          END
          $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION profile_api.get_profile(p_role text, p_claims text, p_owner uuid)
          RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request(p_role, p_claims);
            RETURN QUERY SELECT * FROM profile.profiles WHERE owner_id = p_owner;
          END
          $$
        """
    )
    columns = ", ".join(_FIELDS)
    picked = ", ".join(f"v.{c}" for c in _FIELDS)
    updates = ", ".join(
        f"{c} = CASE WHEN '{c}' = ANY (p_mask) THEN EXCLUDED.{c} ELSE p.{c} END" for c in _FIELDS
    )
    # A soft-deleted profile is wiped first (restart_own_deleted_profile), so the upsert below
    # starts it afresh. Fields outside the mask are absent from p_values: NULL on create, kept
    # on update.
    op.execute(
        f"""
        CREATE FUNCTION profile_api.upsert_profile(p_claims text, p_values jsonb, p_mask text[])
          RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request('authenticated', p_claims);
            PERFORM profile.restart_own_deleted_profile();
            RETURN QUERY
              INSERT INTO profile.profiles AS p (owner_id, {columns})
              SELECT auth.uid(), {picked}
                FROM jsonb_populate_record(NULL::profile.profiles, p_values) AS v
              ON CONFLICT (owner_id) DO UPDATE SET {updates}
              RETURNING p.*;
          END
          $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION profile_api.soft_delete_profile(p_claims text)
          RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request('authenticated', p_claims);
            RETURN QUERY SELECT * FROM profile.soft_delete_own_profile();
          END
          $$
        """
    )
    # Oldest first, a batch at a time. Two purges racing for a row is harmless: the second
    # waits for the first's row lock, finds the row gone and does not count it. The DELETE
    # policy still holds the 30-day floor whatever p_days says.
    op.execute(
        """
        CREATE FUNCTION profile_api.purge_profiles(
            p_claims text, p_days integer, p_limit integer, p_dry_run boolean
          ) RETURNS bigint
          LANGUAGE plpgsql VOLATILE
          AS $$
          DECLARE
            n bigint;
          BEGIN
            PERFORM profile_api.begin_request('service_role', p_claims);
            IF p_dry_run THEN
              SELECT count(*) INTO n FROM profile.profiles
               WHERE deleted_at < now() - make_interval(days => p_days);
            ELSE
              DELETE FROM profile.profiles WHERE id IN (
                SELECT id FROM profile.profiles
                 WHERE deleted_at < now() - make_interval(days => p_days)
                 ORDER BY deleted_at LIMIT p_limit);
              GET DIAGNOSTICS n = ROW_COUNT;
            END IF;
            RETURN n;
          END
          $$
        """
    )


def downgrade() -> None:
    """Drop schema profile_api and its functions."""
    op.execute("DROP SCHEMA profile_api CASCADE")
