"""Profiles table, Supabase-compatible auth context, roles, grants and row-level security.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

Everything the service relies on for authorization lives here as reviewable SQL. Alembic
autogenerate cannot see policies, grants or functions, so they are written by hand.

Two deliberate departures from the schema document, both keeping its policies' meaning:

* Soft delete. Under RLS, an UPDATE whose new row fails a SELECT policy is rejected, so an
  owner's `SET deleted_at = now()` fails against `select_own_profiles` (active rows only).
  Rather than widen SELECT, an owner soft-deletes through `profile.soft_delete_own_profile()`,
  a narrow SECURITY DEFINER function that can only stamp `deleted_at` on the caller's own active
  row (`auth.uid()`). Likewise `profile.restart_own_deleted_profile()` lets a fresh Upsert reuse
  the caller's soft-deleted row by wiping every profile field first: no deleted data comes back.
* `update_own_profile` also requires `deleted_at IS NULL`, and users hold UPDATE only on the
  profile fields (column privileges), so an owner can neither undelete nor touch
  id/owner_id/timestamps directly.

Purge: `service_role` may DELETE only through `purge_expired_profiles_service`, whose USING
clause is the GDPR floor (soft-deleted more than 30 days ago), so no role the service uses can
delete an active or recently deleted profile, whatever the service asks for.
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Marks objects this migration created in shared namespaces, so downgrade removes exactly those
# and leaves a Supabase-provided `auth` schema or `auth.uid()` alone.
_MARKER = "created by profile-service migration 0001"

# The fields a user may write; everything else is maintained by the database.
_USER_COLUMNS = (
    "age, sex, height_cm, weight_kg, experience_level, limitations, primary_goal, "
    "available_equipment, session_length, generation_params"
)


def upgrade() -> None:
    """Create the schema, auth context, roles, table, trigger, grants and policies."""
    # gen_random_uuid() is built in since PostgreSQL 13; pgcrypto is added where offered (the
    # embedded server has none) for parity with the schema document.
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pgcrypto')
             AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgcrypto') THEN
            CREATE EXTENSION pgcrypto;
            COMMENT ON EXTENSION pgcrypto IS '{_MARKER}';
          END IF;
        END $$
        """
    )
    _create_roles()
    _create_auth_context()
    op.execute("CREATE SCHEMA profile")
    _create_table()
    _create_functions()
    _grant()
    _create_policies()


def _create_roles() -> None:
    # Roles are cluster-wide and may already exist (Supabase, or another database), so only
    # missing ones are created, and downgrade leaves them in place.
    op.execute(
        """
        DO $$
        DECLARE r text;
        BEGIN
          FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
              EXECUTE format('CREATE ROLE %I NOLOGIN NOINHERIT', r);
            END IF;
          END LOOP;
        END $$
        """
    )


def _create_auth_context() -> None:
    # Same definition as Supabase's auth.uid(): the legacy per-claim setting first, then the
    # JSON claims that PostgREST (and this service) set with set_config(..., true).
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
            CREATE SCHEMA auth;
            COMMENT ON SCHEMA auth IS '{_MARKER}';
          END IF;
          IF to_regprocedure('auth.uid()') IS NULL THEN
            CREATE FUNCTION auth.uid() RETURNS uuid
              LANGUAGE sql STABLE
              AS $f$
                SELECT coalesce(
                  nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
                )::uuid
              $f$;
            COMMENT ON FUNCTION auth.uid() IS '{_MARKER}';
          END IF;
        END $$
        """
    )
    op.execute("GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role")


def _create_table() -> None:
    op.execute(
        """
        CREATE TABLE profile.profiles (
          id                  uuid NOT NULL DEFAULT gen_random_uuid(),
          owner_id            uuid NOT NULL,
          age                 integer,
          sex                 text,
          height_cm           integer,
          weight_kg           integer,
          experience_level    text,
          limitations         text,
          primary_goal        text,
          available_equipment text[],
          session_length      text,
          generation_params   jsonb,
          deleted_at          timestamptz,
          created_at          timestamptz NOT NULL DEFAULT now(),
          updated_at          timestamptz NOT NULL DEFAULT now(),
          CONSTRAINT profiles_pkey PRIMARY KEY (id),
          CONSTRAINT profiles_owner_id_key UNIQUE (owner_id)
        )
        """
    )
    op.execute(
        "COMMENT ON COLUMN profile.profiles.owner_id IS "
        "'auth.users(id), by value: no foreign key across services'"
    )
    op.execute("CREATE INDEX profiles_deleted_at_idx ON profile.profiles USING btree (deleted_at)")


def _create_functions() -> None:
    op.execute(
        """
        CREATE FUNCTION profile.set_updated_at() RETURNS trigger
          LANGUAGE plpgsql
          AS $$
          BEGIN
            NEW.updated_at := now();
            RETURN NEW;
          END
          $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER profiles_set_updated_at
          BEFORE UPDATE ON profile.profiles
          FOR EACH ROW EXECUTE FUNCTION profile.set_updated_at()
        """
    )
    # SECURITY DEFINER with an empty search_path: every name is schema-qualified, so a caller
    # cannot redirect it. Each touches only the row whose owner_id is the caller's auth.uid().
    op.execute(
        """
        CREATE FUNCTION profile.soft_delete_own_profile() RETURNS SETOF profile.profiles
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
            UPDATE profile.profiles
               SET deleted_at = now()
             WHERE owner_id = auth.uid() AND deleted_at IS NULL
            RETURNING *
          $$
        """
    )
    op.execute(
        f"""
        CREATE FUNCTION profile.restart_own_deleted_profile() RETURNS void
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
            UPDATE profile.profiles
               SET ({_USER_COLUMNS}, deleted_at, created_at)
                 = (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, now())
             WHERE owner_id = auth.uid() AND deleted_at IS NOT NULL
          $$
        """
    )
    for fn in ("soft_delete_own_profile()", "restart_own_deleted_profile()"):
        op.execute(f"REVOKE ALL ON FUNCTION profile.{fn} FROM PUBLIC")
        op.execute(f"GRANT EXECUTE ON FUNCTION profile.{fn} TO authenticated")


def _grant() -> None:
    op.execute("GRANT USAGE ON SCHEMA profile TO authenticated, service_role")
    op.execute("GRANT SELECT ON profile.profiles TO authenticated, service_role")
    op.execute(f"GRANT INSERT (owner_id, {_USER_COLUMNS}) ON profile.profiles TO authenticated")
    op.execute(f"GRANT UPDATE ({_USER_COLUMNS}) ON profile.profiles TO authenticated")
    op.execute("GRANT DELETE ON profile.profiles TO service_role")


def _create_policies() -> None:
    op.execute("ALTER TABLE profile.profiles ENABLE ROW LEVEL SECURITY")
    # The four policies of the schema document, under their names.
    op.execute(
        """
        CREATE POLICY select_own_profiles ON profile.profiles
          FOR SELECT
          USING (auth.uid() = owner_id AND deleted_at IS NULL)
        """
    )
    op.execute(
        """
        CREATE POLICY select_all_profiles_service ON profile.profiles
          FOR SELECT TO service_role
          USING (true)
        """
    )
    op.execute(
        """
        CREATE POLICY insert_own_profile ON profile.profiles
          FOR INSERT
          WITH CHECK (auth.uid() = owner_id)
        """
    )
    # `deleted_at IS NULL` added: word for word, an owner could undelete and read its data again.
    op.execute(
        """
        CREATE POLICY update_own_profile ON profile.profiles
          FOR UPDATE
          USING (auth.uid() = owner_id AND deleted_at IS NULL)
        """
    )
    # The GDPR floor, enforced by the database whatever retention the service is asked for.
    op.execute(
        """
        CREATE POLICY purge_expired_profiles_service ON profile.profiles
          FOR DELETE TO service_role
          USING (deleted_at IS NOT NULL AND deleted_at < now() - interval '30 days')
        """
    )


def downgrade() -> None:
    """Drop what upgrade created in this database; cluster-wide roles stay."""
    op.execute("DROP SCHEMA profile CASCADE")
    op.execute(
        f"""
        DO $$
        BEGIN
          IF to_regprocedure('auth.uid()') IS NOT NULL
             AND obj_description('auth.uid()'::regprocedure, 'pg_proc') = '{_MARKER}' THEN
            DROP FUNCTION auth.uid();
          END IF;
          IF obj_description(to_regnamespace('auth'), 'pg_namespace') = '{_MARKER}' THEN
            DROP SCHEMA auth;
          END IF;
          IF (SELECT obj_description(oid, 'pg_extension') FROM pg_extension
               WHERE extname = 'pgcrypto') = '{_MARKER}' THEN
            DROP EXTENSION pgcrypto;
          END IF;
        END $$
        """
    )
