"""Pause, resume and abort under real concurrency: four worker processes on a job, on every
database backend."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from batchactions_peewee import JobStatus, PeeweeStateStore, prepare_job

from ..support import REPO, child
from ..support.stores import PEEWEE_BACKENDS, make_store

WORKERS = 4
RECORD_MS = 5
WAIT_S = 60.0  # a bound, not a timing


@contextmanager
def workers(
    url: str, store: PeeweeStateStore, job_id: str, tmp: Path, lease_ms: int
) -> Iterator[list[tuple[subprocess.Popen[bytes], Path]]]:
    """WORKERS child processes working ``job_id``, each logging the records it is given."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for n in range(WORKERS):
            log, out = tmp / f"{job_id}-w{n}.log", tmp / f"{job_id}-w{n}.out"
            argv = child.argv("work", "--url", url, "--prefix", store.table_prefix)
            argv += ["--job-id", job_id, "--worker-id", f"w{n}", "--lease-ms", str(lease_ms)]
            argv += ["--log", str(log), "--record-ms", str(RECORD_MS)]
            with out.open("wb") as stdout:
                started.append((subprocess.Popen(argv, cwd=REPO, stdout=stdout), out))
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def logged(tmp: Path, job_id: str) -> list[int]:
    return [int(line) for f in tmp.glob(f"{job_id}-w*.log") for line in f.read_text().split()]


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.02)


def summaries(started: list[tuple[subprocess.Popen[bytes], Path]]) -> list[dict[str, object]]:
    for proc, _ in started:
        assert proc.wait(timeout=WAIT_S) == 0
    return [json.loads(out.read_text()) for _, out in started]


@pytest.mark.slow
@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_four_processes_wait_out_a_pause_and_finish_the_job_once(
    kind: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    url = url_for(kind)
    store, database = make_store(url)
    try:
        total = 400
        job_id = prepare_job(store, ({"n": i} for i in range(total)), batch_size=10).job_id
        with workers(url, store, job_id, tmp_path, lease_ms=3000) as started:
            until(lambda: len(logged(tmp_path, job_id)) >= 40)
            assert store.pause_job(job_id)
            # Each worker finishes the batch in hand: after that, nothing more is processed.
            # (Waited for twice: a claim in flight as the pause committed still takes its
            # batch, and finishes it.)
            until(lambda: not store.get_distributed_status(job_id).processing_batches)
            time.sleep(0.5)
            until(lambda: not store.get_distributed_status(job_id).processing_batches)
            during = len(logged(tmp_path, job_id))
            time.sleep(2.0)
            assert len(logged(tmp_path, job_id)) == during, "a paused job's records went on"
            assert during < total
            assert store.resume_job(job_id)
            done = summaries(started)
        assert sorted(logged(tmp_path, job_id)) == list(range(total)), "each record once"
        assert sum(int(str(s["processed"])) for s in done) == total
        assert [s["finalized"] for s in done].count(True) == 1
        assert {s["stopped"] for s in done} == {"done"}
        state = store.get_job_state(job_id)
        assert state is not None and state.status == JobStatus.COMPLETED
    finally:
        store.drop_tables()
        database.close()


@pytest.mark.slow
@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_an_abort_mid_run_stops_four_processes_and_loses_nothing_written(
    kind: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    url = url_for(kind)
    store, database = make_store(url)
    try:
        total = 400
        job_id = prepare_job(store, ({"n": i} for i in range(total)), batch_size=10).job_id
        other = prepare_job(store, ({"n": i} for i in range(20)), batch_size=10).job_id
        lease_ms = 600  # renewals every 200 ms: how soon the abort is noticed
        with workers(url, store, job_id, tmp_path, lease_ms=lease_ms) as started:
            until(lambda: len(logged(tmp_path, job_id)) >= 40)
            assert store.abort_job(job_id)
            aborted_at = time.monotonic()
            done = summaries(started)
            stopped_within = time.monotonic() - aborted_at
        assert {s["stopped"] for s in done} == {"aborted"}
        assert not any(s["finalized"] for s in done)
        assert stopped_within < WAIT_S
        state = store.get_job_state(job_id)
        assert state is not None and state.status == JobStatus.ABORTED
        # Every batch is COMPLETED (written before the abort was noticed) or PENDING (given
        # back): none is left held, and what was written is all there.
        statuses = {b.status.value for b in state.batches}
        assert statuses <= {"COMPLETED", "PENDING"}
        written = sum(b.processed_count for b in state.batches)
        assert written == len(store.get_processed_records(job_id))
        assert written == sum(int(str(s["processed"])) for s in done)
        assert len(logged(tmp_path, job_id)) < total
        # The other job was untouched.
        other_state = store.get_job_state(other)
        assert other_state is not None and other_state.status == JobStatus.PROCESSING
    finally:
        store.drop_tables()
        database.close()
