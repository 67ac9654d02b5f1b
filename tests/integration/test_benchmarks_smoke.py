"""benchmarks/bench.py runs end to end in smoke mode and prints every row of its table.

Timings are not checked (they belong to benchmarks/RESULTS.md): only that each backend gets
every row the benchmark promises, with measured values, and that nothing failed on the way
(errors, batches left behind, a job that did not complete).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from ..support import REPO
from ..support.backends import ENV, server_url

BENCH = REPO / "benchmarks" / "bench.py"

#: One pattern per row the issue asks for (the claim + complete row once per concurrency).
EXPECTED_ROWS = (
    r"save_batch_records, \d+/call",
    r"prepare_job, \d+/batch",
    r"complete_batch, \d+ records",
    r"save_processed_record",
    r"claim \+ complete, 1 threads",
    r"claim \+ complete, 4 threads",
    r"claim \+ complete, 16 threads",
    r"claim \+ complete, \d+ processes",
    r"get_progress at [\d,]+ records",
    r"get_distributed_status at [\d,]+ records",
    r"get_batch_records \(\d+ records\) at [\d,]+ records",
    r"end to end, [\d,]+ records, \d+ processes",
    r"end to end: peak RSS per process",
    r"concurrency 1, sync, ",
    r"concurrency 8, async, ",
    r"CPU s per 10k records",
    r"import [\d,]+ CSV rows, transactional insert_many, \d+ processes",
    r"same, against the raw driver doing the job's bookkeeping too",
    r"volume, [\d,]+ records, \d+ processes: physical limit",
    r"\s*no-op: records/s",
    r"\s*schema: CPU s per 1M records",
    r"\s*no-op: bytes written",
    r"\s*schema: peak RSS per process",
)


def run_smoke(kind: str) -> str:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--backends", kind],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"bench.py failed:\n{result.stdout}\n{result.stderr}"
    assert "profile written" not in result.stderr, "profiling is off unless --profile is given"
    return result.stdout


def table_rows(output: str, kind: str) -> list[list[str]]:
    """The table's rows for ``kind``, as lists of cells."""
    return [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in output.splitlines()
        if line.startswith(f"| {kind} ")
    ]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "mysql", "postgres"])
def test_smoke_run_prints_every_row_with_a_measurement_and_no_failure(kind: str) -> None:
    if kind != "sqlite" and not server_url(kind):
        pytest.skip(f"{kind}: set {ENV[kind]} to run this backend")
    output = run_smoke(kind)
    rows = table_rows(output, kind)
    whats = [row[1] for row in rows]
    for pattern in EXPECTED_ROWS:
        assert any(re.fullmatch(pattern + r".*", what) for what in whats), (
            f"no row matches {pattern!r}:\n{output}"
        )
    for _backend, what, library, baseline, ratio, target, verdict in rows:
        assert library not in ("", "-"), f"{what}: no measurement"
        assert baseline not in ("", "-"), f"{what}: no baseline"
        assert verdict in ("ok", "MISSED"), f"{what}: {verdict}"
        if re.fullmatch(r">= [\d.]+x", target):  # a row compared with the raw driver
            assert re.fullmatch(r"\d+\.\d\dx", ratio), f"{what}: ratio {ratio!r}"
    assert "total time" in output


def test_smoke_run_refuses_an_unknown_backend() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--backends", "oracle"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown oracle" in result.stderr


def test_profile_flag_is_off_by_default_and_defaults_to_benchmarks_profiles() -> None:
    """--profile DIR as before; --profile alone writes to benchmarks/profiles/ (git-ignored)."""
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import bench; "
        "print(bench.parse_args([]).profile); "
        "print(bench.parse_args(['--profile']).profile); "
        "print(bench.parse_args(['--profile', 'somewhere']).profile)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(BENCH.parent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["None", str(BENCH.parent / "profiles"), "somewhere"]


def test_the_async_store_benchmark_prints_its_three_rows() -> None:
    """benchmarks/async_store.py at tiny sizes on SQLite: each row measured, none failed."""
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "async_store.py"),
            "--backends=sqlite",
            "--rounds=1",
            "--cycles=5",
            "--records=1000",
            "--worker-records=300",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for row in ("claim \\+ complete cycles", "bulk writes", "worker, async processor"):
        assert re.search(rf"\| sqlite \| {row}[^|]*\| [\d,]+/s \| [\d,]+/s \|", result.stdout), (
            result.stdout
        )
