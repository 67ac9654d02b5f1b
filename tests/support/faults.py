"""What the fault tests share: worker processes, session kills, the exactly-once check.

``WorkerPool`` starts ``work`` children (support/child.py, with the no-op processor; output
to files, so a chatty worker never blocks on a full pipe), kills them, and reads the
summaries the survivors print.
``kill_sessions`` ends every server session of the test database but the caller's own.
``assert_done_exactly_once`` checks the outcome the issue asks for: every record has exactly
one final result, every batch is COMPLETED, the job is COMPLETED.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import BatchStatus, JobStatus, PeeweeStateStore, RecordStatus

from . import REPO, child
from .backends import ENV, fresh_server_database, open_database, server_url
from .stores import new_prefix

#: Ample for any run here; reached only when something hangs.
DEADLINE_S = 150.0


@contextmanager
def own_server_database(kind: str) -> Iterator[str]:
    """A database of its own on the ``kind`` server, so that killing "every session of the
    test database" reaches no other test's connections. Skips a server not configured."""
    if not server_url(kind):
        pytest.skip(f"{kind}: set {ENV[kind]} to run this backend")
    with fresh_server_database(kind) as url:
        yield url


@contextmanager
def store_on(url: str) -> Iterator[PeeweeStateStore]:
    """A store with fresh tables on ``url``; its tables are dropped afterwards."""
    database = open_database(url)
    store = PeeweeStateStore(database, table_prefix=new_prefix())
    store.create_tables()
    try:
        yield store
    finally:
        store.drop_tables()
        database.close()


@dataclass
class WorkerProcess:
    """One worker process (``child.py work``) and the files its output goes to."""

    worker_id: str
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    killed: bool = False

    def summary(self) -> dict[str, Any]:
        """The WorkerSummary it printed; fails the test if it did not exit cleanly."""
        assert self.proc.returncode == 0, f"{self.worker_id} died: {self.err.read_text()[-3000:]}"
        summary: dict[str, Any] = json.loads(self.out.read_text().strip().splitlines()[-1])
        return summary


@dataclass
class WorkerPool:
    """Worker processes on one job; replacements get new ids (w0, w1, ...)."""

    url: str
    prefix: str
    job_id: str
    tmp: Path
    lease_ms: int = 2000
    workers: list[WorkerProcess] = field(default_factory=list)
    args: tuple[str, ...] = ()  # more ``child.py work`` options for every worker

    def start(self, *args: str) -> WorkerProcess:
        """A new worker, with ``args`` beyond the pool's own."""
        worker_id = f"w{len(self.workers)}"
        out, err = self.tmp / f"{worker_id}.out", self.tmp / f"{worker_id}.err"
        argv = child.argv("work", "--url", self.url, "--prefix", self.prefix)
        argv += ["--job-id", self.job_id, "--worker-id", worker_id]
        argv += ["--lease-ms", str(self.lease_ms), *self.args, *args]
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=stdout, stderr=stderr)
        self.workers.append(WorkerProcess(worker_id, proc, out, err))
        return self.workers[-1]

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.proc.poll() is None]

    def kill(self, worker: WorkerProcess) -> None:
        worker.proc.kill()  # SIGKILL: no cleanup, no summary, its lease simply stops
        worker.proc.wait(timeout=30)
        worker.killed = True

    def wait(self, timeout_s: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout_s
        for worker in self.workers:
            worker.proc.wait(timeout=max(0.1, deadline - time.monotonic()))

    def summaries(self) -> list[dict[str, Any]]:
        """The summaries of every worker that was not killed."""
        return [w.summary() for w in self.workers if not w.killed]

    def kill_all(self) -> None:
        for worker in self.alive():
            worker.proc.kill()
            worker.proc.wait(timeout=30)


@contextmanager
def worker_pool(
    url: str, store: PeeweeStateStore, job_id: str, tmp: Path, *args: str
) -> Iterator[WorkerPool]:
    pool = WorkerPool(url, store.table_prefix, job_id, tmp, args=args)
    try:
        yield pool
    finally:
        pool.kill_all()


def kill_sessions(database: pw.Database | pw.DatabaseProxy, kind: str) -> int:
    """Kill every session of ``database``'s database on its server except this one (the
    caller's connection); returns how many were killed."""
    db: Any = database
    if kind == "mysql":
        cursor: Any = db.execute_sql(
            "SELECT ID FROM information_schema.PROCESSLIST "
            "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
        )
        killed = 0
        for (session,) in cursor.fetchall():
            try:
                db.execute_sql(f"KILL {int(session)}")
                killed += 1
            except pw.OperationalError:  # 1094: the session ended on its own meanwhile
                pass
        return killed
    cursor = db.execute_sql(
        "SELECT COUNT(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    )
    return int(cursor.fetchone()[0])


def assert_done_exactly_once(store: PeeweeStateStore, job_id: str, total: int) -> None:
    """Every record has exactly one final result (processed), none is pending or failed;
    every batch is COMPLETED and the job is COMPLETED."""
    job = store.get_job_state(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.batches and all(b.status == BatchStatus.COMPLETED for b in job.batches)
    status = store.get_distributed_status(job_id)
    assert (status.completed_batches, status.total_batches) == (len(job.batches),) * 2
    assert status.is_complete
    progress = store.get_progress(job_id)
    assert (progress.processed_records, progress.failed_records) == (total, 0)
    assert (progress.pending_records, progress.percentage) == (0, 100)
    # The records table itself: one row per index (UNIQUE(jobId, recordIndex)), all final.
    R = store.tables.records
    rows, distinct, first, last = (
        R.select(
            pw.fn.COUNT(R.id),
            pw.fn.COUNT(R.record_index.distinct()),
            pw.fn.MIN(R.record_index),
            pw.fn.MAX(R.record_index),
        )
        .where(R.job_id == job_id)
        .tuples()
        .first()
    )
    assert (rows, distinct, first, last) == (total, total, 0, total - 1)
    counts: Any = (
        R.select(R.status, pw.fn.COUNT(R.id)).where(R.job_id == job_id).group_by(R.status).tuples()
    )
    by_status = {status: int(n) for status, n in counts}
    assert by_status == {RecordStatus.PROCESSED.value: total}
    # Each batch's counters agree with its records.
    assert sum(b.processed_count for b in job.batches) == total
    assert sum(b.failed_count for b in job.batches) == 0


def batches_taken_over(store: PeeweeStateStore, job_id: str) -> int:
    """Batches that went back to PENDING at least once (released or reclaimed) before they
    were completed: a clean claim and completion leave a batch at version 2."""
    B = store.tables.batches
    return int(B.select().where(B.job_id == job_id, B.version > 2).count())
