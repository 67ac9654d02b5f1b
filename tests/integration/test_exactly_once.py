"""Exactly once under SIGKILLs: a transactional batch processor's writes to the job's own
database land once per valid record, however often its workers are killed; without
``transactional`` they land at least once, and a batch taken over after its worker was
killed is imported twice.

A job of 3,000 records {"n": i} (every 20th invalid for the schema, so 2,850 valid), in
batches of 50, on SQLite, MariaDB and PostgreSQL. Its workers (support/child.py with
``--import-into``) insert one row per valid record into a user table without a unique key
(a duplicate is counted, not refused), then take 0.1 s per batch, inside the transaction
when transactional. First one worker alone claims batch 0, inserts its rows and blocks: it
is SIGKILLed there, between the processor's writes and the batch's completion, so its batch
is taken over once its 2 s lease runs out, and redone. Then four workers share the job
while the storm SIGKILLs one of those holding a batch (mid-batch: when transactional,
inside its transaction) every 0.2-0.5 s and starts a replacement, 12 times or until fewer
than 8 batches are PENDING. The job must end COMPLETED with every record done
once; the user table must hold exactly one row per valid record when transactional
(duplicates 0), and at least batch 0's valid records twice when not. Each run prints its
kills, takeovers and duplicates (run with -s to see them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from batchactions_peewee import BatchStatus, JobStatus, PeeweeStateStore, prepare_job

from ..support.faults import (
    DEADLINE_S,
    WorkerPool,
    batches_taken_over,
    own_server_database,
    store_on,
    worker_pool,
)
from ..support.imports import counts, user_table
from ..support.stores import PEEWEE_BACKENDS

pytestmark = pytest.mark.slow

RECORDS = 3000
BATCH_SIZE = 50
WORKERS = 4
INVALID = frozenset(i for i in range(RECORDS) if i % 20 == 7)
VALID = RECORDS - len(INVALID)
#: Batch 0's valid records: what the worker killed after its writes imported once already.
FIRST_BATCH_VALID = len([i for i in range(BATCH_SIZE) if i not in INVALID])
BATCH_MS = 100
CALM_BELOW_PENDING = 8
#: The storm's kills at most: enough to hit workers mid-batch many times, few enough that
#: the job goes on between them on a slow machine (a worker takes a second to start).
MAX_KILLS = 12


@contextmanager
def database_url(kind: str, url_for: Callable[[str], str]) -> Iterator[str]:
    if kind == "sqlite":
        yield url_for("sqlite")
    else:
        with own_server_database(kind) as url:
            yield url


def source() -> Iterator[dict[str, Any]]:
    return ({"n": f"x{i}" if i in INVALID else i} for i in range(RECORDS))


def kill_after_its_writes(pool: WorkerPool, marker: Path) -> None:
    """One worker alone claims batch 0, imports its rows and blocks: SIGKILL it there."""
    blocker = pool.start("--block-batch", "0", "--marker", str(marker))
    deadline = time.monotonic() + DEADLINE_S
    while not marker.exists():
        assert blocker.proc.poll() is None, blocker.err.read_text()[-3000:]
        assert time.monotonic() < deadline, "the first worker never reached its block"
        time.sleep(0.02)
    pool.kill(blocker)


def holders(store: PeeweeStateStore, job_id: str) -> set[str]:
    """The workers that hold a batch of the job now."""
    B = store.tables.batches
    held: Any = B.select(B.worker_id).where(B.job_id == job_id, B.status == "PROCESSING")
    return {worker_id for (worker_id,) in held.tuples()}


def storm(pool: WorkerPool, store: PeeweeStateStore, job_id: str, rng: random.Random) -> int:
    """Every 0.2-0.5 s, SIGKILL a random worker among those holding a batch (mid-batch,
    so inside its transaction when transactional) and start a replacement, MAX_KILLS times
    or until the job nears its end; returns how many workers were killed."""
    kills = 0
    deadline = time.monotonic() + DEADLINE_S
    while kills < MAX_KILLS:
        assert time.monotonic() < deadline, "the storm never found its victims"
        time.sleep(rng.uniform(0.2, 0.5))
        if store.get_distributed_status(job_id).pending_batches < CALM_BELOW_PENDING:
            break
        busy = holders(store, job_id)
        victims = [w for w in pool.alive() if w.worker_id in busy]
        if victims:
            pool.kill(rng.choice(victims))
            pool.start()
            kills += 1
    return kills


def assert_job_done_once(store: PeeweeStateStore, job_id: str) -> None:
    """Every batch COMPLETED once its last holder wrote it, every record final once."""
    job = store.get_job_state(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert job.batches and all(b.status == BatchStatus.COMPLETED for b in job.batches)
    assert store.record_counts(job_id) == {"processed": VALID, "invalid": len(INVALID)}
    assert sum(b.processed_count for b in job.batches) == VALID
    assert sum(b.failed_count for b in job.batches) == len(INVALID)


@pytest.mark.parametrize("mode", ["transactional", "plain"])
@pytest.mark.parametrize("kind", PEEWEE_BACKENDS)
def test_sigkilled_workers_import_each_valid_record_once_only_when_transactional(
    kind: str, mode: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    rng = random.Random(1616)
    with database_url(kind, url_for) as url, store_on(url) as store:
        name = f"{store.table_prefix}imported"
        with user_table(store.database, name) as table:
            job = prepare_job(store, source(), batch_size=BATCH_SIZE)
            args = ["--import-into", name, "--batch-ms", str(BATCH_MS)]
            if mode == "transactional":
                args.append("--transactional")
            started = time.monotonic()
            with worker_pool(url, store, job.job_id, tmp_path, *args) as pool:
                kill_after_its_writes(pool, tmp_path / "blocked")
                for _ in range(WORKERS):
                    pool.start()
                kills = 1 + storm(pool, store, job.job_id, rng)
                pool.wait()
                summaries = pool.summaries()
            elapsed = time.monotonic() - started
            rows, distinct = counts(store.database, table)
            taken_over = batches_taken_over(store, job.job_id)

            print(
                f"\n[exactly once {kind} {mode}] {RECORDS} records ({VALID} valid) in "
                f"{job.total_batches} batches: {kills} workers SIGKILLed ({len(pool.workers)} "
                f"processes in all), batches taken over: {taken_over}, leases lost: "
                f"{sum(s['leases_lost'] for s in summaries)}; user rows {rows}, distinct "
                f"{distinct}, duplicates {rows - distinct}; {elapsed:.1f} s"
            )
            assert kills >= 3, "the job neared its end before the storm got going"
            assert taken_over >= 1, "batch 0, whose worker was killed, was taken over"
            assert_job_done_once(store, job.job_id)
            assert [s["finalized"] for s in summaries].count(True) == 1
            assert distinct == VALID, "every valid record was imported"
            if mode == "transactional":
                assert rows == VALID, "exactly once: no duplicate"
            else:
                assert rows - distinct >= FIRST_BATCH_VALID, "at least once: batch 0 twice"
