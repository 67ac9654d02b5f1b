"""``--concurrency N`` on ``run`` and ``work``: an async def processor with N records in
flight in each worker process, end to end through the command line."""

from __future__ import annotations

from pathlib import Path

from ..support.cli import Target, as_json, cli, ok, pasted

#: An async processor that holds its records until 8 are in flight at once (so a run that
#: never gets there fails them), writes the most it saw to most.txt and fails every n % 10
#: == 3 after an await: failures count only if the coroutine is awaited.
ASYNC_MODULE = """
import asyncio
import pathlib

state = {"in_flight": 0, "most": 0, "full": None}


async def process(record, context):
    if state["full"] is None:
        state["full"] = asyncio.Event()
    state["in_flight"] += 1
    if state["in_flight"] > state["most"]:
        state["most"] = state["in_flight"]
        pathlib.Path("most.txt").write_text(str(state["most"]))
    if state["in_flight"] >= 8:
        state["full"].set()
    try:
        await asyncio.wait_for(state["full"].wait(), 30)
        if record["n"] % 10 == 3:
            raise RuntimeError("three")
    finally:
        state["in_flight"] -= 1
"""


def write_numbers(directory: Path, count: int = 100) -> None:
    (directory / "cli_async.py").write_text(ASYNC_MODULE)
    (directory / "numbers.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(count)))


def test_run_with_concurrency_awaits_an_async_processor_eight_at_a_time(
    tmp_path: Path, target: Target
) -> None:
    write_numbers(tmp_path)
    options = ["--processor", "cli_async:process", "--concurrency", "8", "--workers", "1"]
    options += ["--batch-size", "50", "--json", *target.args]
    report = as_json(cli("run", "numbers.jsonl", *options, cwd=tmp_path))
    assert report["status"] == "COMPLETED"
    assert (report["processedRecords"], report["failedRecords"]) == (90, 10)
    assert (tmp_path / "most.txt").read_text() == "8"


def test_work_repeats_concurrency_in_the_command_that_goes_on(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_numbers(tmp_path)
    options = ["--processor", "cli_async:process", "--batch-size", "50", *sqlite_target.args]
    job_id = ok(cli("prepare", "numbers.jsonl", *options, cwd=tmp_path)).stdout.strip()
    limited = ["--max-batches", "1", "--concurrency", "8", *sqlite_target.args]
    first = ok(cli("work", job_id, *limited, cwd=tmp_path))
    go_on = pasted(first.stderr, "go on with")
    assert go_on[go_on.index("--concurrency") + 1] == "8"
    rest = as_json(cli(*go_on, "--json", cwd=tmp_path))
    assert rest["status"] == "COMPLETED"
    assert (rest["processedRecords"], rest["failedRecords"]) == (90, 10)


def test_concurrency_must_be_at_least_one(tmp_path: Path, sqlite_target: Target) -> None:
    write_numbers(tmp_path, 1)
    refused = cli("run", "numbers.jsonl", "--concurrency", "0", *sqlite_target.args, cwd=tmp_path)
    assert refused.returncode == 2
    assert "--concurrency: must be at least 1, got 0" in refused.stderr
