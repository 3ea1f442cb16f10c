"""The verified claims win on every request: the legacy per-claim settings are set too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

`auth.uid()` reads `request.jwt.claim.sub` before `request.jwt.claims` (Supabase's order).
`begin_request` set only the latter, so a default of the former (`ALTER ROLE … SET
request.jwt.claim.sub`, or one left on a shared connection behind a pooler) steered every
request to that user's row. Now `begin_request` sets `request.jwt.claim.sub` and
`request.jwt.claim.role` transaction-locally from the verified claims (empty when absent, which
`auth.uid()` reads as "look at the claims"), so nothing set outside the request can win. The
start-up check also refuses to serve while such a default exists (startup_check.py).
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BEGIN = """
    CREATE OR REPLACE FUNCTION profile_api.begin_request(p_role text, p_claims text) RETURNS void
      LANGUAGE plpgsql VOLATILE
      AS $$
      DECLARE
        claims jsonb := p_claims::jsonb;
      BEGIN
        IF p_role IS DISTINCT FROM 'authenticated' AND p_role IS DISTINCT FROM 'service_role'
        THEN
          RAISE EXCEPTION 'role % is not an API role', p_role
            USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM set_config('role', p_role, true);
        PERFORM set_config('request.jwt.claims', p_claims, true);
        {legacy}
      END
      $$
"""
_LEGACY = """PERFORM set_config('request.jwt.claim.sub', coalesce(claims ->> 'sub', ''), true);
        PERFORM set_config('request.jwt.claim.role', coalesce(claims ->> 'role', ''), true);"""


def upgrade() -> None:
    """begin_request sets the per-claim settings from the verified claims too."""
    op.execute(_BEGIN.format(legacy=_LEGACY))


def downgrade() -> None:
    """begin_request as revision 0002 made it."""
    op.execute(_BEGIN.format(legacy=""))
