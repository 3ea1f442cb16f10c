"""The bench's arithmetic: which ceiling a row is compared with, and what the summary counts.

The bench itself is run by `make bench`, never by the tests (no test asserts a speed); these
check only how its figures are combined.
"""

from typing import Any

from bench import payloads, report


def _cell(target: str, kind: str, rps: float, **extra: Any) -> dict[str, Any]:
    return {
        "target": target,
        "kind": kind,
        "workers": 1,
        "rpc": "get",
        "concurrency": 16,
        "loadgen": "h2load",
        "rps": rps,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": 3.0,
        "errors": 0,
        **extra,
    }


def test_a_real_row_is_compared_with_its_paired_runs_when_it_has_them() -> None:
    cells = [
        _cell("bare-sync", "bare", 4000.0),
        _cell("bare-aio", "bare", 3000.0),
        _cell("real-1w", "real", 3000.0, paired_ceiling_rps=6000.0),
        _cell("real-2w", "real", 3000.0),
    ]
    report.add_ratios(cells)
    bare_sync, bare_aio, paired, unpaired = cells
    assert (bare_sync["vs_ceiling"], bare_aio["vs_ceiling"]) == (1.0, 0.75)
    assert paired["ceiling_rps"] == 6000.0
    assert paired["vs_ceiling"] == 0.5
    assert paired["ceiling"] == "bare-sync (h2load), paired runs"
    assert unpaired["ceiling_rps"] == 4000.0  # the fastest bare row
    assert unpaired["vs_ceiling"] == 0.75


def test_the_summary_judges_get_on_the_strictest_bare_aio_and_counts_paired_errors() -> None:
    cells = [
        _cell("bare-sync", "bare", 9000.0),  # not a grpc.aio server: not the Get target's
        _cell("bare-aio-uvloop", "bare", 5000.0),
        _cell("bare-aio-io", "bare", 3000.0),
        _cell(
            "real-1w",
            "real",
            2400.0,
            paired_ceiling_rps=6000.0,
            paired_ceiling_target="bare-aio",
            paired_ceiling_errors=2,
        ),
    ]
    report.add_ratios(cells)
    result = report.summary(cells, {"real-1w": {"workers": 1}})
    figures = result["figures"]
    assert figures["get_c16_vs_bare_aio"] == 0.4  # the paired 6,000, above the same run's 5,000
    assert figures["get_c16_vs_bare_aio_io"] == 0.8  # the proposed yardstick
    lines = result["lines"]
    assert any("= 40% of the fastest bare grpc.aio" in x and "NOT met" in x for x in lines)
    assert any("= 80% of bare-aio-io" in x and ": met)" in x for x in lines)
    assert figures["errors"] == 2


def test_the_summary_checks_load_holding_p99_and_upsert_against_the_issue_s_targets() -> None:
    cells = [
        _cell("bare-aio", "bare", 4000.0),
        _cell("bare-aio", "bare", 4000.0, rpc="upsert"),
        _cell("real-1w", "real", 2000.0, p99_ms=8.0),
        _cell("real-1w", "real", 1880.0, concurrency=64),
        _cell("real-1w", "real", 1800.0, rpc="upsert", loadgen="c-h2"),
    ]
    report.add_ratios(cells)
    result = report.summary(cells, {"real-1w": {"workers": 1}})
    figures, lines = result["figures"], result["lines"]
    assert figures["get_c64_vs_c16"] == 0.94
    assert any(x.startswith("Get c=64 against c=16: 0.94x") and "NOT met" in x for x in lines)
    assert any(x.startswith("Get c=16 p99: 8.00 ms") and ": met)" in x for x in lines)
    assert figures["upsert_c16_vs_bare_aio"] == 0.45
    assert any(x.startswith("Upsert c=16 (c-h2)") and ": met)" in x for x in lines)


def test_the_progress_line_shows_every_run_and_the_paired_ones() -> None:
    cell = _cell(
        "real-1w",
        "real",
        3000.0,
        runs_rps=[2800.0, 3000.0],
        paired_ceiling_runs_rps=[5900.0, 6000.0],
        steal=0.07,
    )
    line = report.progress_line(cell)
    assert "runs 2,800/3,000" in line
    assert "paired ceiling 5,900/6,000" in line
    assert "steal 7%" in line


def test_a_token_client_row_is_also_compared_with_the_same_client_on_the_bare_server() -> None:
    upsert = {"rpc": "upsert"}
    cells = [
        _cell("bare-sync", "bare", 6000.0, **upsert),
        _cell("bare-sync", "bare", 5000.0, **upsert, loadgen="c-h2"),
        _cell("bare-sync", "bare", 3000.0, **upsert, loadgen="py-aio"),
        _cell("real-1w", "real", 2500.0, **upsert, loadgen="c-h2"),
    ]
    report.add_ratios(cells)
    real = cells[-1]
    assert real["vs_ceiling"] == 2500.0 / 6000.0  # the ceiling stays h2load's
    assert real["vs_same_client_on_bare_sync"] == 0.5  # c-h2's bare row, not py-aio's
    result = report.summary(cells, {"real-1w": {"workers": 1}})
    # 2,500/s is within 70 % of the 3,000/s py-aio drives, but py-aio did not drive this row.
    assert [line for line in result["lines"] if line.startswith("warning")] == []


def test_the_anatomy_line_gives_each_busy_thread_s_microseconds_per_call() -> None:
    cell = _cell(
        "real-1w",
        "real",
        2000.0,
        elapsed=2.0,  # 4,000 calls
        threads=[
            {"thread": "python", "cpu_seconds": 1.4},
            {"thread": "event_engine", "cpu_seconds": 0.06},
            {"thread": "grpc_global_tim", "cpu_seconds": 0.001},  # under 1 us a call: left out
        ],
        switches={"voluntary": 18000, "involuntary": 400},
    )
    line = report.anatomy_line(cell)
    assert line is not None
    assert "python 350, event_engine 15 us" in line
    assert "grpc_global_tim" not in line
    assert "4.50 voluntary, 0.10 involuntary" in line


def test_no_anatomy_without_calls() -> None:
    assert report.anatomy_line(_cell("real-1w", "real", 0.0, elapsed=2.0, threads=[])) is None


def test_the_bare_servers_answer_a_profile_with_every_field_set() -> None:
    profile = payloads.constant_profile()
    set_fields = {field.name for field, _ in profile.ListFields()}  # non-default values only
    assert set_fields == {f.name for f in profile.DESCRIPTOR.fields}


def test_the_sealed_server_is_compared_with_the_same_server_in_clear() -> None:
    cells = [
        _cell("real-1w", "real", 2000.0),
        _cell("real-1w-sealed", "real", 1900.0),
        _cell("real-1w", "real", 1000.0, rpc="upsert"),
        _cell("real-1w-sealed", "real", 800.0, rpc="upsert"),
    ]
    report.add_ratios(cells)
    targets = {"real-1w": {"workers": 1}, "real-1w-sealed": {"workers": 1}}
    result = report.summary(cells, targets)
    assert result["figures"]["get_c16_sealed_vs_clear"] == 0.95
    assert result["figures"]["upsert_c16_sealed_vs_clear"] == 0.8
    assert "Get c=16 with limitations sealed: 1,900/s = 0.95 of the same server in clear" in (
        "\n".join(result["lines"])
    )
