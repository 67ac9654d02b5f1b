"""``pause``, ``resume``, ``abort`` and ``delete`` from the command line, on every backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from batchactions_peewee import JobStatus, prepare_job

from ..support.cli import Target, as_json, cli, ok, pasted
from ..support.stores import PEEWEE_BACKENDS, new_prefix


@pytest.fixture(params=PEEWEE_BACKENDS)
def job_target(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> tuple[Target, str]:
    """A target with tables and one PROCESSING job of 6 records in 3 batches."""
    target = Target(url_for(request.param), new_prefix())
    store, database = target.store()
    try:
        store.create_tables()
        job_id = prepare_job(store, ({"n": i} for i in range(6)), batch_size=2).job_id
    finally:
        database.close()
    return target, job_id


def status(target: Target, job_id: str) -> JobStatus:
    store, database = target.store()
    try:
        state = store.get_job_state(job_id)
    finally:
        database.close()
    assert state is not None
    return JobStatus(state.status)


def test_pause_resume_and_abort_move_the_job_and_say_so(
    tmp_path: Path, job_target: tuple[Target, str]
) -> None:
    target, job_id = job_target
    paused = ok(cli("pause", job_id, *target.args, cwd=tmp_path))
    assert f"job {job_id} paused:" in paused.stdout
    assert status(target, job_id) == JobStatus.PAUSED
    again = ok(cli("pause", job_id, *target.args, cwd=tmp_path))
    assert again.stdout.strip() == f"job {job_id} is already PAUSED"
    resumed = as_json(cli("resume", job_id, "--json", *target.args, cwd=tmp_path))
    assert resumed == {"jobId": job_id, "changed": True, "status": "PROCESSING"}
    aborted = as_json(cli("abort", job_id, "--json", *target.args, cwd=tmp_path))
    assert aborted == {"jobId": job_id, "changed": True, "status": "ABORTED"}
    assert status(target, job_id) == JobStatus.ABORTED


def test_a_control_that_cannot_apply_is_a_one_line_error(
    tmp_path: Path, job_target: tuple[Target, str]
) -> None:
    target, job_id = job_target
    ok(cli("abort", job_id, *target.args, cwd=tmp_path))
    refused = cli("resume", job_id, *target.args, cwd=tmp_path)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        f"batchactions-peewee: error: job {job_id} is ABORTED: only a PAUSED job can be resumed"
    ]
    as_json_refused = cli("pause", job_id, "--json", *target.args, cwd=tmp_path)
    assert as_json_refused.returncode == 1
    unknown = cli("pause", "no-such-job", *target.args, cwd=tmp_path)
    assert unknown.returncode == 1 and "no job no-such-job" in unknown.stderr
    assert "Traceback" not in unknown.stderr + refused.stderr


def test_delete_refuses_a_running_job_without_force_and_removes_it_with(
    tmp_path: Path, job_target: tuple[Target, str]
) -> None:
    target, job_id = job_target
    refused = cli("delete", job_id, *target.args, cwd=tmp_path)
    assert refused.returncode == 1 and "abort" in refused.stderr
    assert status(target, job_id) == JobStatus.PROCESSING
    deleted = as_json(cli("delete", job_id, "--force", "--json", *target.args, cwd=tmp_path))
    assert deleted == {"jobId": job_id, "deleted": True}
    store, database = target.store()
    try:
        assert store.get_job_state(job_id) is None
        assert store.get_pending_records(job_id) == []
    finally:
        database.close()


def test_work_stops_at_max_batches_and_says_how_to_go_on(
    tmp_path: Path, job_target: tuple[Target, str]
) -> None:
    target, job_id = job_target
    first = ok(cli("work", job_id, "--max-batches", "1", "--json", *target.args, cwd=tmp_path))
    go_on = pasted(first.stderr, "go on with")
    assert go_on[:2] == ["work", job_id]
    assert json.loads(first.stdout)["status"] == "PROCESSING"
    store, database = target.store()
    try:
        assert store.get_distributed_status(job_id).completed_batches == 1
    finally:
        database.close()
    rest = as_json(cli(*go_on, "--json", cwd=tmp_path))
    assert rest["status"] == "COMPLETED"


def test_work_refuses_a_limit_of_zero(tmp_path: Path, job_target: tuple[Target, str]) -> None:
    target, job_id = job_target
    refused = cli("work", job_id, "--max-duration", "0", *target.args, cwd=tmp_path)
    assert refused.returncode == 2
    assert "--max-duration: must be at least 1, got 0" in refused.stderr


def test_purge_lists_then_deletes_old_finished_jobs(
    tmp_path: Path, job_target: tuple[Target, str]
) -> None:
    target, job_id = job_target
    ok(cli("abort", job_id, *target.args, cwd=tmp_path))
    kept = as_json(cli("purge", "--older-than", "7d", "--json", *target.args, cwd=tmp_path))
    assert kept == {"dryRun": False, "count": 0}, "aborted just now: younger than 7 days"
    listed = as_json(
        cli("purge", "--older-than", "0", "--dry-run", "--json", *target.args, cwd=tmp_path)
    )
    assert listed == {"dryRun": True, "jobs": [job_id], "count": 1}
    assert status(target, job_id) == JobStatus.ABORTED, "a dry run deletes nothing"
    purged = ok(cli("purge", "--older-than", "0", *target.args, cwd=tmp_path))
    assert purged.stdout.strip() == "purged 1 job(s) with their batches and records"
    refused = cli("purge", "--older-than", "3x", *target.args, cwd=tmp_path)
    assert refused.returncode == 2 and "7d, 12h, 30m" in refused.stderr
