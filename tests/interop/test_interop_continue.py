"""A Python Worker continues the job Node's SequelizeStateStore left half done.

Node job A: b0 COMPLETED by node-worker-1, b1 left PROCESSING by node-worker-2 (its worker is
gone), b2 PENDING. A Python worker on the same database claims b2, reclaims b1 once its lease
is stale, processes both, and finalizes the job exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from batchactions_peewee import (
    BatchStatus,
    JobStatus,
    PeeweeStateStore,
    ProcessingContext,
    RecordStatus,
    Worker,
)

from ..support.interop import NODE_PREFIX, copy_sqlite_fixture
from .test_interop import JOB_A, mariadb_node_database

LEASE_MS = 60_000


@pytest.fixture(params=["sqlite", "mariadb"])
def node_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    if request.param == "sqlite":
        database: pw.Database = pw.SqliteDatabase(str(copy_sqlite_fixture(tmp_path)))
        yield database
        database.close()
    else:
        with mariadb_node_database() as database:
            yield database


def node_claim_time(store: PeeweeStateStore) -> int:
    state = store.get_job_state(JOB_A)
    assert state is not None
    b1 = state.batches[1]
    assert (b1.status, b1.worker_id) == (BatchStatus.PROCESSING, "node-worker-2")
    assert b1.claimed_at is not None
    return b1.claimed_at


def test_a_python_worker_finishes_the_node_job(node_database: pw.Database) -> None:
    probe = PeeweeStateStore(node_database, table_prefix=NODE_PREFIX)
    now = [node_claim_time(probe) + LEASE_MS + 1]  # node-worker-2's lease has just run out
    store = PeeweeStateStore(node_database, table_prefix=NODE_PREFIX, clock=lambda: now[0])
    seen: list[tuple[str, int]] = []

    def processor(record: dict[str, object], context: ProcessingContext) -> None:
        seen.append((context.batch_id, context.record_index))
        assert str(record["email"]).endswith("@example.com")

    summary = Worker(store, processor, worker_id="py-worker", lease_timeout_ms=LEASE_MS).run(JOB_A)

    assert (summary.batches, summary.processed, summary.failed, summary.finalized) == (
        2,
        6,
        0,
        True,
    )
    # b2 first (it was PENDING), then b1 once reclaimed: each record processed once.
    assert seen == [("node-A-b2", i) for i in (6, 7, 8)] + [("node-A-b1", i) for i in (3, 4, 5)]
    state = store.get_job_state(JOB_A)
    assert state is not None and state.status == JobStatus.COMPLETED
    assert state.completed_at == now[0]
    assert [(b.status, b.worker_id) for b in state.batches] == [
        (BatchStatus.COMPLETED, "node-worker-1"),
        (BatchStatus.COMPLETED, "py-worker"),
        (BatchStatus.COMPLETED, "py-worker"),
    ]
    # Node's results for b0 stand; every record has exactly one final result.
    statuses = {
        r.index: r.status
        for r in store.get_processed_records(JOB_A) + store.get_failed_records(JOB_A)
    }
    assert statuses == {
        0: RecordStatus.PROCESSED,
        1: RecordStatus.INVALID,
        2: RecordStatus.FAILED,
        **{i: RecordStatus.PROCESSED for i in range(3, 9)},
    }
    assert store.get_pending_records(JOB_A) == []
    progress = store.get_progress(JOB_A)
    assert (progress.processed_records, progress.failed_records, progress.percentage) == (7, 2, 100)
    assert store.try_finalize_job(JOB_A) is False  # exactly once


def test_a_live_node_lease_is_left_alone(node_database: pw.Database) -> None:
    probe = PeeweeStateStore(node_database, table_prefix=NODE_PREFIX)
    now = [node_claim_time(probe) + LEASE_MS // 2]  # node-worker-2 may still be working
    store = PeeweeStateStore(node_database, table_prefix=NODE_PREFIX, clock=lambda: now[0])
    worker = Worker(store, lambda record, context: None, worker_id="py", lease_timeout_ms=LEASE_MS)
    first = worker.process_next(JOB_A)
    assert (first.claimed, first.batch_id) == (True, "node-A-b2")
    assert store.reclaim_stale_batches(JOB_A, LEASE_MS) == 0
    assert worker.process_next(JOB_A).claimed is False
    assert store.try_finalize_job(JOB_A) is False
    state = store.get_job_state(JOB_A)
    assert state is not None and state.batches[1].worker_id == "node-worker-2"
