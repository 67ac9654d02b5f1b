"""``work`` under a supervisor: its children end with it, SIGTERM gives the batches in
hand back and exits 0, a second signal stops at once, ``--worker-id`` names the workers
and ``--until-done`` exits only once the job is over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..support.cli import TIMEOUT_S, Target, as_json, cli, ok

#: Each record writes ``started-PID-N`` and, once processed, ``done-PID-N``; ``HOLD``
#: (a file's name) keeps the first record waiting until that file exists.
CASE = """
import os, pathlib, time

def slow(record, context):
    here = pathlib.Path(os.environ["MARKS"])
    mark = f"{os.getpid()}-{record['n']}"
    (here / f"started-{mark}").touch()
    gate = os.environ.get("HOLD")
    if gate and not list(here.glob("held-*")):
        (here / f"held-{mark}").touch()
        while not (here / gate).exists():
            time.sleep(0.02)
    time.sleep(float(os.environ.get("RECORD_S", "0.1")))
    (here / f"done-{mark}").touch()
"""


def _prepare(tmp_path: Path, target: Target, records: int, batch_size: int) -> str:
    (tmp_path / "sup_case.py").write_text(CASE)
    (tmp_path / "n.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(records)))
    (tmp_path / "marks").mkdir()
    prepared = as_json(
        cli(
            "prepare",
            "n.jsonl",
            "--processor",
            "sup_case:slow",
            "--batch-size",
            str(batch_size),
            "--json",
            *target.args,
            cwd=tmp_path,
        )
    )
    return str(prepared["jobId"])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "MARKS": str(tmp_path / "marks"), **extra}


def _work(tmp_path: Path, target: Target, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "batchactions_peewee", "work", *args, *target.args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _marks(tmp_path: Path, kind: str) -> list[tuple[int, int]]:
    found = []
    for path in (tmp_path / "marks").glob(f"{kind}-*"):
        pid, n = path.name.split("-")[1:]
        found.append((int(pid), int(n)))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; its new parent reaps it in its own time


def _counts(target: Target, job_id: str) -> dict[str, int]:
    store, database = target.store()
    try:
        return dict(store.record_counts(job_id))
    finally:
        database.close()


def _finish(tmp_path: Path, target: Target, job_id: str, records: int) -> None:
    """Another worker finishes the job: every record processed exactly once in the end."""
    report = as_json(
        cli("work", job_id, "--json", *target.args, cwd=tmp_path, env=_env(tmp_path, RECORD_S="0"))
    )
    assert report["status"] == "COMPLETED"
    assert (report["processedRecords"], report["failedRecords"]) == (records, 0)
    assert _counts(target, job_id).get("processed") == records


@pytest.mark.slow
def test_sigkill_of_the_parent_ends_its_worker_children(tmp_path: Path, target: Target) -> None:
    job_id = _prepare(tmp_path, target, records=60, batch_size=10)
    run = _work(tmp_path, target, job_id, "--workers", "2")
    try:
        _wait_for(lambda: len({pid for pid, _ in _marks(tmp_path, "started")}) == 2, "2 workers")
        children = {pid for pid, _ in _marks(tmp_path, "started")}
        assert run.pid not in children, "--workers 2 runs two children"
        run.kill()
        run.wait(timeout=TIMEOUT_S)
        _wait_for(lambda: not any(_alive(pid) for pid in children), "the children to end")
    finally:
        run.kill()
        run.communicate()
    status = target.store()[0].get_distributed_status(job_id)
    assert status.processing_batches == 0, "the orphans gave their batches back"
    _finish(tmp_path, target, job_id, records=60)


def test_one_worker_runs_in_the_commands_own_process(tmp_path: Path, target: Target) -> None:
    job_id = _prepare(tmp_path, target, records=6, batch_size=3)
    run = _work(tmp_path, target, job_id, "--workers", "1", "--json", RECORD_S="0")
    run.communicate(timeout=TIMEOUT_S)
    assert run.returncode == 0
    assert {pid for pid, _ in _marks(tmp_path, "done")} == {run.pid}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_the_record_in_hand_gives_the_batch_back_and_exits_0(
    tmp_path: Path, sqlite_target: Target, workers: int
) -> None:
    target = sqlite_target
    job_id = _prepare(tmp_path, target, records=80, batch_size=20)
    run = _work(tmp_path, target, job_id, "--workers", str(workers), "--json", RECORD_S="0.2")
    try:
        _wait_for(lambda: len(_marks(tmp_path, "started")) >= 2 * workers, "records in hand")
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)  # Kubernetes' default grace period
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert "stopped on SIGTERM" in err
    assert "lost the lease" not in err, "a batch given back is not a lease lost"
    assert sorted(_marks(tmp_path, "started")) == sorted(_marks(tmp_path, "done")), (
        "every record begun was finished"
    )
    status = target.store()[0].get_distributed_status(job_id)
    assert status.processing_batches == 0, "the batches in hand were given back"
    assert status.completed_batches < 4
    _finish(tmp_path, target, job_id, records=80)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("workers", "second", "code"),
    [(1, signal.SIGTERM, 143), (2, signal.SIGTERM, 143), (1, signal.SIGINT, 130)],
)
def test_a_second_signal_stops_at_once(
    tmp_path: Path, sqlite_target: Target, workers: int, second: signal.Signals, code: int
) -> None:
    job_id = _prepare(tmp_path, sqlite_target, records=20, batch_size=10)
    run = _work(tmp_path, sqlite_target, job_id, "--workers", str(workers), HOLD="never")
    try:
        _wait_for(lambda: bool(_marks(tmp_path, "held")), "a record held")
        run.send_signal(signal.SIGTERM)  # the held record never finishes by itself
        lines: list[str] = []
        assert run.stderr is not None
        threading.Thread(target=lambda: lines.extend(run.stderr or []), daemon=True).start()
        # The first signal is handled (not merged with the second) once it is told.
        _wait_for(lambda: any("stopping" in line for line in lines), "the notice")
        run.send_signal(second)
        run.wait(timeout=TIMEOUT_S)
    finally:
        run.kill()
    assert run.returncode == code
    workers_pids = {pid for pid, _ in _marks(tmp_path, "started")}
    _wait_for(lambda: not any(_alive(pid) for pid in workers_pids), "the workers to end")


def test_worker_id_names_the_workers(tmp_path: Path, sqlite_target: Target) -> None:
    job_id = _prepare(tmp_path, sqlite_target, records=4, batch_size=2)
    env = {"RECORD_S": "0", "BATCHACTIONS_WORKER_ID": "pod-b"}
    report = as_json(
        cli("work", job_id, "--json", *sqlite_target.args, cwd=tmp_path, env=_env(tmp_path, **env))
    )
    assert [w["workerId"] for w in report["workers"]] == ["pod-b"]


@pytest.mark.slow
def test_worker_id_with_several_workers_names_them_id_1_to_n(
    tmp_path: Path, sqlite_target: Target
) -> None:
    job_id = _prepare(tmp_path, sqlite_target, records=4, batch_size=2)
    report = as_json(
        cli(
            "work",
            job_id,
            "--workers",
            "2",
            "--worker-id",
            "pod-a",
            "--json",
            *sqlite_target.args,
            cwd=tmp_path,
            env=_env(tmp_path, RECORD_S="0"),
        )
    )
    assert sorted(w["workerId"] for w in report["workers"]) == ["pod-a-1", "pod-a-2"]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--worker-id", "x" * 129], {}),
        ([], {"BATCHACTIONS_WORKER_ID": "x" * 129}),
        (["--worker-id", "x" * 127, "--workers", "2"], {}),
        (["--worker-id", ""], {}),
    ],
)
def test_a_bad_worker_id_is_a_one_line_usage_error(
    tmp_path: Path, sqlite_target: Target, args: list[str], env: dict[str, str]
) -> None:
    job_id = _prepare(tmp_path, sqlite_target, records=2, batch_size=2)
    result = cli(
        "work", job_id, *args, *sqlite_target.args, cwd=tmp_path, env=_env(tmp_path, **env)
    )
    assert result.returncode == 2, result.stderr
    assert "worker id" in result.stderr and "Traceback" not in result.stderr
    assert _counts(sqlite_target, job_id).get("processed", 0) == 0, "nothing was written"


@pytest.mark.slow
@pytest.mark.parametrize("end", ["completed", "aborted"])
def test_until_done_waits_for_the_batch_another_worker_holds(
    tmp_path: Path, target: Target, end: str
) -> None:
    job_id = _prepare(tmp_path, target, records=40, batch_size=5)
    holder = _work(tmp_path, target, job_id, HOLD="go", RECORD_S="0")
    waiter: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: bool(_marks(tmp_path, "held")), "the holder's batch")
        waiter = _work(tmp_path, target, job_id, "--until-done", "--json", RECORD_S="0")
        store, database = target.store()

        def only_the_held_batch_is_left() -> bool:
            status = store.get_distributed_status(job_id)
            return status.pending_batches == 0 and status.completed_batches == 7

        _wait_for(only_the_held_batch_is_left, "the other batches")
        database.close()
        assert waiter.poll() is None, "--until-done waits while a batch is held"
        if end == "aborted":
            ok(cli("abort", job_id, *target.args, cwd=tmp_path))
        (tmp_path / "marks" / "go").touch()
        _, err = waiter.communicate(timeout=TIMEOUT_S)
        holder.communicate(timeout=TIMEOUT_S)
    finally:
        for process in (holder, waiter):
            if process is not None:
                process.kill()
    if end == "aborted":
        assert waiter.returncode == 3, err
        return
    assert waiter.returncode == 0, err
    assert holder.returncode == 0
    assert _counts(target, job_id).get("processed") == 40


@pytest.mark.slow
def test_until_done_stopped_by_sigterm_before_the_end_exits_75(
    tmp_path: Path, sqlite_target: Target
) -> None:
    """A drained pod of a Kubernetes Job must not count as done: one SIGTERM gives the
    batch back as always, but exits 75 (EX_TEMPFAIL) while the job is not over."""
    job_id = _prepare(tmp_path, sqlite_target, records=20, batch_size=10)
    # Records of 50 ms: the job cannot end between the SIGTERM and its drain.
    run = _work(tmp_path, sqlite_target, job_id, "--until-done", HOLD="go", RECORD_S="0.05")
    try:
        _wait_for(lambda: bool(_marks(tmp_path, "held")), "a record held")
        run.send_signal(signal.SIGTERM)
        lines: list[str] = []
        assert run.stderr is not None
        threading.Thread(target=lambda: lines.extend(run.stderr or []), daemon=True).start()
        _wait_for(lambda: any("stopping" in line for line in lines), "the notice")
        (tmp_path / "marks" / "go").touch()
        run.wait(timeout=30)
    finally:
        run.kill()
    assert run.returncode == 75, "".join(lines)
    assert any("not over yet" in line for line in lines)
    status = sqlite_target.store()[0].get_distributed_status(job_id)
    assert status.processing_batches == 0, "the batch in hand was given back"
    _finish(tmp_path, sqlite_target, job_id, records=20)
