"""A job remembers the code it was prepared with; ``work`` says why it has nothing to do;
a job whose preparation did not finish is visible; and every command shows the same
figures of a job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from batchactions_peewee import JobConfig, JobState, JobStatus

from ..support.cli import TIMEOUT_S, Target, as_json, cli, ok, pasted
from .test_cli import People, write_people


def _prepare(directory: Path, target: Target, *extra: str) -> tuple[People, str]:
    people = write_people(directory)
    prepared = ok(
        cli(
            "prepare", "people.csv", "--batch-size", "25", *extra, *target.args, cwd=directory
        )
    )  # fmt: skip
    return people, prepared.stdout.strip()


def _state(target: Target, job_id: str) -> JobState:
    store, database = target.store()
    try:
        job = store.get_job_state(job_id)
    finally:
        database.close()
    assert job is not None
    return job


# -- the code a job remembers ----------------------------------------------------------------


def test_work_uses_the_schema_and_processor_the_job_was_prepared_with(
    tmp_path: Path, target: Target
) -> None:
    code = ("--schema", "cli_case:Person", "--processor", "cli_case:process")
    people, job_id = _prepare(tmp_path, target, *code)
    assert _state(target, job_id).config.model_extra == {
        "source": "people.csv",
        "code": {"processor": "cli_case:process", "schema": "cli_case:Person"},
    }
    report = as_json(cli("work", job_id, "--json", *target.args, cwd=tmp_path))
    figures = (report["processedRecords"], report["invalidRecords"], report["failedRecords"])
    assert figures == (people.processed, people.invalid, people.failed)


def test_an_option_given_to_work_overrides_the_jobs_own_and_says_so(
    tmp_path: Path, sqlite_target: Target
) -> None:
    people, job_id = _prepare(tmp_path, sqlite_target, "--processor", "cli_case:process")
    given = ("--processor", "cli_case:slow_ok")
    (tmp_path / "cli_case.py").write_text(
        (tmp_path / "cli_case.py").read_text() + "\n\ndef slow_ok(record, context):\n    pass\n"
    )
    result = ok(cli("work", job_id, *given, "--json", *sqlite_target.args, cwd=tmp_path))
    assert "--processor cli_case:slow_ok, not the job's own cli_case:process" in result.stderr
    report = as_json(result)
    assert report["failedRecords"] == 0, "the job's own processor, which refuses some, did not run"
    assert report["processedRecords"] + report["invalidRecords"] == people.records


def test_a_job_whose_processor_cannot_be_imported_is_a_usage_error(
    tmp_path: Path, sqlite_target: Target
) -> None:
    _, job_id = _prepare(tmp_path, sqlite_target, "--processor", "cli_case:process")
    (tmp_path / "cli_case.py").unlink()
    refused = cli("work", job_id, *sqlite_target.args, cwd=tmp_path)
    assert refused.returncode == 2
    [line] = refused.stderr.splitlines()
    assert "--processor cli_case:process: cannot import cli_case" in line
    assert f"job {job_id} was prepared with --processor cli_case:process" in line
    assert _state(sqlite_target, job_id).status == JobStatus.PROCESSING, "nothing was marked"


def test_prepare_refuses_a_processor_it_cannot_import_and_writes_nothing(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_people(tmp_path)
    refused = cli(
        "prepare", "people.csv", "--processor", "cli_case:missing", *sqlite_target.args,
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--processor cli_case:missing: cli_case has no missing" in refused.stderr


# -- work with nothing to do -------------------------------------------------------------------


def test_work_says_why_it_has_nothing_to_do(tmp_path: Path, target: Target) -> None:
    _, job_id = _prepare(tmp_path, target)
    ok(cli("work", job_id, "--json", *target.args, cwd=tmp_path))
    done = ok(cli("work", job_id, *target.args, cwd=tmp_path))
    assert f"job {job_id} is COMPLETED: nothing to do" in done.stderr

    _, other = _prepare(tmp_path, target)
    ok(cli("abort", other, *target.args, cwd=tmp_path))
    aborted = cli("work", other, "--json", *target.args, cwd=tmp_path)
    assert aborted.returncode == 1
    assert f"job {other} was aborted: nothing to do" in aborted.stderr
    assert as_json(subprocess.CompletedProcess([], 0, aborted.stdout, ""))["status"] == "ABORTED"


def test_a_job_whose_preparation_did_not_finish_is_listed_and_can_be_deleted(
    tmp_path: Path, target: Target
) -> None:
    store, database = target.store()
    try:
        store.create_tables()
        config = JobConfig(batch_size=10, source="big.csv")
        created = JobState(
            id="half-done", config=config, status=JobStatus.CREATED, started_at=store.now()
        )
        store.save_job_state(created)
        store._save_pending_records("half-done", "b0", 0, [{"n": n} for n in range(7)])
    finally:
        database.close()

    working = cli("work", "half-done", *target.args, cwd=tmp_path)
    assert working.returncode == 1
    assert "job half-done is still being prepared, or its preparation was stopped" in working.stderr

    status = ok(cli("status", "half-done", *target.args, cwd=tmp_path)).stdout
    assert "7 records so far" in status
    assert "its preparation did not finish" in status
    delete = pasted(status, "delete it with")
    assert delete[:2] == ["delete", "half-done"]

    [listed] = as_json(cli("jobs", "--json", *target.args, cwd=tmp_path))
    assert (listed["status"], listed["writtenRecords"]) == ("CREATED", 7)
    table = ok(cli("jobs", *target.args, cwd=tmp_path)).stdout
    assert "half-done  CREATED" in table and "preparing" in table

    ok(cli(*delete, cwd=tmp_path))
    assert as_json(cli("jobs", "--json", *target.args, cwd=tmp_path)) == []


# -- figures that agree ------------------------------------------------------------------------


def _figures(report: dict[str, object]) -> tuple[object, ...]:
    keys = ("totalRecords", "processedRecords", "invalidRecords", "failedRecords")
    return tuple(report[k] for k in (*keys, "pendingRecords", "percentage"))


def test_run_status_and_jobs_show_the_same_figures_of_a_stopped_job(
    tmp_path: Path, target: Target
) -> None:
    people = write_people(tmp_path, rows=600)
    run = cli(
        "run", "people.csv", "--schema", "cli_case:Person", "--processor", "cli_case:process",
        "--batch-size", "100", "--workers", "1", "--stop-on-error", "--json", *target.args,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    report = as_json(subprocess.CompletedProcess([], 0, run.stdout, ""))
    assert report["status"] == "FAILED"
    status = as_json(cli("status", report["jobId"], "--json", *target.args, cwd=tmp_path))
    [listed] = as_json(cli("jobs", "--json", *target.args, cwd=tmp_path))
    assert _figures(report) == _figures(status) == _figures(listed)
    assert report["pendingRecords"] > 0 and report["percentage"] < 100
    assert report["totalRecords"] == people.records
    done = report["processedRecords"] + report["invalidRecords"] + report["failedRecords"]
    assert done + report["pendingRecords"] == people.records
    assert sum(w["processed"] + w["invalid"] + w["failed"] for w in report["workers"]) == done


def test_each_work_group_reports_its_own_records_and_rate(tmp_path: Path, target: Target) -> None:
    people, job_id = _prepare(tmp_path, target)
    first = as_json(cli("work", job_id, "--max-batches", "2", "--json", *target.args, cwd=tmp_path))
    rest = as_json(cli("work", job_id, "--json", *target.args, cwd=tmp_path))
    assert first["thisRun"]["records"] == 50
    assert first["thisRun"]["records"] + rest["thisRun"]["records"] == people.records
    for group in (first, rest):
        run = group["thisRun"]
        assert run["recordsPerSecond"] == round(run["records"] / (run["elapsedMs"] / 1000), 1)


def test_a_second_ctrl_c_still_reports_what_each_worker_wrote(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_people(tmp_path)  # cli_case.slow: 10 ms a record
    (tmp_path / "numbers.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(400)))
    command = [sys.executable, "-m", "batchactions_peewee", "run", "numbers.jsonl", "--json"]
    command += ["--processor", "cli_case:slow", "--batch-size", "50", "--workers", "2"]
    run = subprocess.Popen(
        [*command, "--job-id", "twice", *sqlite_target.args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    store, database = sqlite_target.store()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, "no batch was completed"
            try:
                if store.get_distributed_status("twice").completed_batches >= 2:
                    break
            except Exception:
                pass  # not prepared yet
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        time.sleep(0.1)  # a batch takes 0.5 s: the workers are mid-batch
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=TIMEOUT_S)
        assert run.returncode == 130, err
        report = as_json(subprocess.CompletedProcess([], 0, out, ""))
        written = sum(store.record_counts("twice").get(s, 0) for s in ("processed", "failed"))
    finally:
        database.close()
    told = sum(w["processed"] + w["failed"] for w in report["workers"])
    assert 0 < told <= written, (told, written)
    assert report["processedRecords"] + report["failedRecords"] == written
