"""Autovacuum after bulk purges: the table's dead tuples are reclaimed within minutes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08

PostgreSQL's default vacuums a table once its dead tuples pass 50 + 20 % of its rows: on 10
million profiles, two million. A purge deletes in bulk (the GDPR backlog of a month, or a
first run over years of soft deletes), and re-encryption rewrites every sealed row, so the
default could leave millions of dead tuples for days. At 2 %, a purge of a fiftieth of the
table brings autovacuum (where the server runs it); analyze follows the same share, since a
purge moves the statistics of deleted_at that its own search uses.
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_SETTINGS = "autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02"


def upgrade() -> None:
    """Set the table's autovacuum thresholds."""
    op.execute(f"ALTER TABLE profile.profiles SET ({_SETTINGS})")


def downgrade() -> None:
    """Back to the server's defaults."""
    op.execute(
        "ALTER TABLE profile.profiles RESET"
        " (autovacuum_vacuum_scale_factor, autovacuum_analyze_scale_factor)"
    )
