"""BatchGetProfiles (AIP-231): many profiles in one statement.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

`profile_api.batch_get_profiles(role, claims, owners)` reads the profiles of the given owners
under the caller's role, like get_profile for one: row-level security decides what is seen
(service_role: every profile, soft-deleted ones included). The service asks it as
service_role only, and orders and checks the answer itself.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """profile_api.batch_get_profiles."""
    op.execute(
        """
        CREATE FUNCTION profile_api.batch_get_profiles(p_role text, p_claims text, p_owners uuid[])
          RETURNS SETOF profile.profiles
          LANGUAGE plpgsql VOLATILE
          AS $$
          BEGIN
            PERFORM profile_api.begin_request(p_role, p_claims);
            RETURN QUERY SELECT * FROM profile.profiles WHERE owner_id = ANY (p_owners);
          END
          $$
        """
    )


def downgrade() -> None:
    """Drop it."""
    op.execute("DROP FUNCTION profile_api.batch_get_profiles(text, text, uuid[])")
