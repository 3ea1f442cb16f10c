"""The scale bench's arithmetic (bench/scale.py): how SCALE_ROWS sizes each part, and the
seeding SQL's ranges. It is run by `make bench-scale`, never by the tests."""

from bench import database
from bench.scale import Plan


def test_the_full_plan_is_the_issue_s() -> None:
    plan = Plan.from_env({})
    assert (plan.rows, plan.base_rows, plan.purge_rows) == (10_000_000, 100_000, 1_000_000)
    assert (plan.soak_gets, plan.soak_upserts, plan.stalled) == (1_000_000, 100_000, 1000)
    assert plan.purge_batches == (1000, 5000)
    assert plan.parts == ("size", "purge", "soak", "stalled")


def test_scale_rows_shrinks_every_part_in_proportion_with_a_floor() -> None:
    plan = Plan.from_env({"SCALE_ROWS": "1000000"})
    assert (plan.base_rows, plan.purge_rows, plan.soak_gets) == (100_000, 100_000, 100_000)
    tiny = Plan.from_env({"SCALE_ROWS": "50000"})
    assert (tiny.base_rows, tiny.purge_rows, tiny.soak_gets) == (50_000, 10_000, 20_000)


def test_the_seeding_sql_makes_active_rows_and_purgeable_ones() -> None:
    assert "md5('bench-' || n)::uuid" in database.SEED_RANGE  # payloads.seeded_owner(n)
    assert "deleted_at" not in database.SEED_RANGE
    assert "now() - interval '31 days'" in database.SEED_DELETED_RANGE
    assert database.SEED_RANGE.count("%s") == database.SEED_DELETED_RANGE.count("%s") == 2
