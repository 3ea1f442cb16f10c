"""The two SECURITY DEFINER functions in PL/pgSQL, so their plans are cached per session.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

A LANGUAGE sql function that cannot be inlined (SECURITY DEFINER, SET search_path) is parsed
and planned on every call: about 40 us of database CPU on each Upsert for
restart_own_deleted_profile alone. PL/pgSQL caches each statement's plan for the session.
Same names, signatures, owners and grants; same statements.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_USER_COLUMNS = (
    "age, sex, height_cm, weight_kg, experience_level, limitations, primary_goal, "
    "available_equipment, session_length, generation_params"
)
_SOFT_DELETE = """
    UPDATE profile.profiles
       SET deleted_at = now()
     WHERE owner_id = auth.uid() AND deleted_at IS NULL
    RETURNING *"""
_RESTART = f"""
    UPDATE profile.profiles
       SET ({_USER_COLUMNS}, deleted_at, created_at)
         = (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, now())
     WHERE owner_id = auth.uid() AND deleted_at IS NOT NULL"""


def upgrade() -> None:
    """Replace the SQL bodies with PL/pgSQL ones."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION profile.soft_delete_own_profile()
          RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
          BEGIN
            RETURN QUERY {_SOFT_DELETE};
          END
          $$
        """
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION profile.restart_own_deleted_profile() RETURNS void
          LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$
          BEGIN
            {_RESTART};
          END
          $$
        """
    )


def downgrade() -> None:
    """Back to the LANGUAGE sql bodies of revision 0001."""
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION profile.soft_delete_own_profile()
          RETURNS SETOF profile.profiles
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$ {_SOFT_DELETE} $$
        """
    )
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION profile.restart_own_deleted_profile() RETURNS void
          LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = ''
          AS $$ {_RESTART} $$
        """
    )
