"""No write commits after its caller's deadline: the database checks it at commit.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29

The service stops waiting for the database before a call's deadline and answers UNAVAILABLE
(or the caller's deadline passes). The statement may still reach the database afterwards: a
frozen backend that thaws, a network that delivers it late. Neither statement_timeout (it
cannot fire in a frozen backend) nor closing the connection (the statement was received)
stops it, and it would then overwrite a newer, acknowledged write.

So every write carries `commit_by`, the wall-clock time after which the service no longer
waits (deadlines.py), set transaction-locally as `request.commit_by`. A deferred constraint
trigger on profiles checks it when the transaction commits, the last moment before the commit
record, and refuses a late commit (SQLSTATE 57014, as a statement timeout). Writes without the
setting (an administrator's, or a service of the previous release during a rollout) are not
affected.

The write functions get overloads with a trailing `p_commit_by` (seconds since the epoch)
that set it and call the existing ones; the old signatures stay for the previous release's
pods during a rolling update.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SET_COMMIT_BY = "PERFORM pg_catalog.set_config('request.commit_by', p_commit_by::text, true);"
# name, the parameters before p_commit_by, the call of the existing function, what it returns.
_WRITES = (
    (
        "upsert_profile",
        "p_claims text, p_values jsonb, p_mask text[]",
        "SELECT * FROM profile_api.upsert_profile(p_claims, p_values, p_mask)",
        "SETOF profile.profiles",
    ),
    (
        "soft_delete_profile",
        "p_claims text",
        "SELECT * FROM profile_api.soft_delete_profile(p_claims)",
        "SETOF profile.profiles",
    ),
    (
        "purge_profiles",
        "p_claims text, p_days integer, p_limit integer, p_dry_run boolean",
        "SELECT profile_api.purge_profiles(p_claims, p_days, p_limit, p_dry_run)",
        "bigint",
    ),
)


def upgrade() -> None:
    """The commit-time check, and the write functions that arm it."""
    op.execute(
        """
        CREATE FUNCTION profile.refuse_late_commit() RETURNS trigger
          LANGUAGE plpgsql
          AS $$
          DECLARE
            commit_by text := pg_catalog.current_setting('request.commit_by', true);
          BEGIN
            IF commit_by <> ''
               AND pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
                   > commit_by::double precision THEN
              RAISE EXCEPTION 'the caller''s deadline passed before the commit'
                USING ERRCODE = 'query_canceled';
            END IF;
            RETURN NULL;
          END
          $$
        """
    )
    op.execute(
        """
        CREATE CONSTRAINT TRIGGER profiles_refuse_late_commit
          AFTER INSERT OR UPDATE OR DELETE ON profile.profiles
          DEFERRABLE INITIALLY DEFERRED
          FOR EACH ROW EXECUTE FUNCTION profile.refuse_late_commit()
        """
    )
    for name, params, call, returns in _WRITES:
        body = f"RETURN QUERY {call};" if returns.startswith("SETOF") else f"RETURN ({call});"
        op.execute(
            f"""
            CREATE FUNCTION profile_api.{name}({params}, p_commit_by double precision)
              RETURNS {returns}
              LANGUAGE plpgsql VOLATILE
              AS $$
              BEGIN
                {_SET_COMMIT_BY}
                {body}
              END
              $$
            """
        )


def downgrade() -> None:
    """Drop the overloads and the check."""
    for name, params, _, _ in _WRITES:
        op.execute(f"DROP FUNCTION profile_api.{name}({params}, double precision)")
    op.execute("DROP TRIGGER profiles_refuse_late_commit ON profile.profiles")
    op.execute("DROP FUNCTION profile.refuse_late_commit()")
