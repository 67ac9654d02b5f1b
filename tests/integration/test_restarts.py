"""Restarts: server sessions killed under running workers, and workers that outlive database
failures their store could not retry away.

The session-kill tests run 4 worker processes on a 50,000-record job (100 batches of 500,
a no-op processor, 2 s leases) on MariaDB and PostgreSQL while the test kills every server
session of the test database but its own, again and again (KILL from
information_schema.processlist; pg_terminate_backend from pg_stat_activity). They print how
many rounds and sessions each run survived (run with -s to see them): a round each time
another 6-14 batches are done.

``Worker.run`` outlives a database failure that the store's own retries could not cure: it
abandons the batch in hand and tries again after a jittered, growing pause, up to
``Worker.store_error_limit`` failures in a row; the unit tests below pin that down on a
store double, and one test on SQLite with a write lock held longer than the store retries.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import (
    BatchReservation,
    BatchStatus,
    ClaimBatchResult,
    InMemoryStateStore,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    ProcessingContext,
    StoreErrorOutlived,
    Worker,
    WorkerEvent,
    prepare_job,
)
from batchactions_peewee.store.session import as_store_error

from ..support.backends import open_database
from ..support.faults import (
    DEADLINE_S,
    assert_done_exactly_once,
    batches_taken_over,
    kill_sessions,
    own_server_database,
    store_on,
    worker_pool,
)
from ..support.stores import SERVER_KINDS, make_store

RECORDS = 50_000
BATCH_SIZE = 500
WORKERS = 4


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


# -- sessions killed under running workers --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_four_workers_finish_a_50k_job_exactly_once_while_all_their_sessions_are_killed(
    kind: str, tmp_path: Path
) -> None:
    rng = random.Random(20240607)
    with own_server_database(kind) as url, store_on(url) as store:
        job = prepare_job(store, ({"n": i} for i in range(RECORDS)), batch_size=BATCH_SIZE)
        started = time.monotonic()
        rounds = sessions = 0
        with worker_pool(url, store, job.job_id, tmp_path) as pool:
            for _ in range(WORKERS):
                pool.start()
            # A round of kills each time another 6-14 batches are done, so that the count
            # does not depend on the machine's speed.
            due = rng.randint(3, 8)
            while pool.alive() and time.monotonic() - started < DEADLINE_S:
                time.sleep(0.02)
                if store.get_distributed_status(job.job_id).completed_batches < due:
                    continue
                due += rng.randint(6, 14)
                killed = kill_sessions(store.database, kind)
                rounds += killed > 0
                sessions += killed
            pool.wait()
            summaries = pool.summaries()
        elapsed = time.monotonic() - started

        print(
            f"\n[restarts {kind}] {RECORDS} records, {WORKERS} workers: {rounds} kill rounds, "
            f"{sessions} sessions killed, store errors outlived by workers: "
            f"{sum(s['store_errors'] for s in summaries)}, leases lost: "
            f"{sum(s['leases_lost'] for s in summaries)}, batches released or reclaimed: "
            f"{batches_taken_over(store, job.job_id)}, {elapsed:.1f} s"
        )
        assert rounds >= 5, "the sessions were not killed several times"
        assert_done_exactly_once(store, job.job_id, RECORDS)
        assert [s["finalized"] for s in summaries].count(True) == 1
        # No worker died, so their own counts add up too: each batch written once.
        assert sum(s["batches"] for s in summaries) == job.total_batches
        assert sum(s["processed"] for s in summaries) == RECORDS


def kill_own_session(database: pw.Database, admin: pw.Database, kind: str) -> None:
    """Kill, from ``admin``, the server session of this thread's ``database`` connection."""
    own_id = "SELECT CONNECTION_ID()" if kind == "mysql" else "SELECT pg_backend_pid()"
    kill = "KILL {}" if kind == "mysql" else "SELECT pg_terminate_backend({})"
    session = database.execute_sql(own_id).fetchone()[0]  # type: ignore[no-untyped-call]
    admin.execute_sql(kill.format(int(session)))  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_prepare_job_outlives_a_session_killed_just_before_it_reads_the_clock(
    kind: str, url_for: Callable[[str], str]
) -> None:
    url = url_for(kind)
    store, database = make_store(url)
    admin = open_database(url)

    def source() -> Iterator[dict[str, int]]:
        yield from ({"n": i} for i in range(4))
        # Every batch is written; the next thing prepare_job does is read the clock.
        kill_own_session(database, admin, kind)

    try:
        job = prepare_job(store, source(), batch_size=2, job_id="clock-after-kill")
        assert job.total_batches == 2
    finally:
        store.drop_tables()
        database.close()
        admin.close()


@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize(
    "read", ["get_batch_records", "get_pending_records", "get_processed_records"]
)
def test_record_reads_are_retried_after_the_session_was_killed(
    kind: str, read: str, url_for: Callable[[str], str]
) -> None:
    url = url_for(kind)
    store, database = make_store(url)
    admin = open_database(url)
    try:
        job = prepare_job(store, ({"n": i} for i in range(3)), batch_size=3)
        state = store.get_job_state(job.job_id)
        assert state is not None
        batch_id = state.batches[0].id
        kill_own_session(database, admin, kind)
        if read == "get_batch_records":
            records = store.get_batch_records(job.job_id, batch_id)
        else:
            records = getattr(store, read)(job.job_id)
        assert len(records) == (0 if read == "get_processed_records" else 3)
    finally:
        store.drop_tables()
        database.close()
        admin.close()


# -- a worker outlives store failures ------------------------------------------------------


class FlakyStore(InMemoryStateStore):
    """An InMemoryStateStore whose chosen methods raise ``error`` on chosen calls.

    ``fail_before[name]`` calls raise before doing anything; ``fail_after[name]`` calls do
    their work, then raise (a write that committed but whose answer was lost).
    """

    def __init__(self, error: Callable[[], Exception] | None = None) -> None:
        super().__init__()
        self.error = error or (lambda: pw.OperationalError(2013, "Lost connection (injected)"))
        self.fail_before: dict[str, int] = {}
        self.fail_after: dict[str, int] = {}
        self.raised = 0

    def _worker_io(self) -> FlakyStore:
        return self  # its faulty bulk forms stand in for its faulty port methods

    def _fault(self, table: dict[str, int], name: str) -> None:
        if table.get(name, 0) > 0:
            table[name] -= 1
            self.raised += 1
            raise as_store_error(self.error())  # as PeeweeStateStore's session raises it

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        self._fault(self.fail_before, "claim_batch")
        return super().claim_batch(job_id, worker_id)

    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]:
        self._fault(self.fail_before, "get_batch_records")
        return super().get_batch_records(job_id, batch_id)

    def _get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        self._fault(self.fail_before, "get_batch_raw")  # the worker's read
        return super()._get_batch_raw(job_id, batch_id)

    def complete_batch(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        return self._faulty_completion(
            lambda: super(FlakyStore, self).complete_batch(
                reservation,
                status=status,
                processed_count=processed_count,
                failed_count=failed_count,
                records=records,
            )
        )

    def _complete_batch_processed(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        processed: Iterable[tuple[int, dict[str, Any], dict[str, Any]]],
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        # The worker's completion: faulted under the same name as complete_batch.
        return self._faulty_completion(
            lambda: super(FlakyStore, self)._complete_batch_processed(
                reservation,
                status=status,
                processed_count=processed_count,
                failed_count=failed_count,
                processed=processed,
                records=records,
            )
        )

    def _faulty_completion(self, complete: Callable[[], bool]) -> bool:
        self._fault(self.fail_before, "complete_batch")
        written = complete()
        self._fault(self.fail_after, "complete_batch")
        return written

    def try_finalize_job(self, job_id: str) -> bool:
        if self.get_distributed_status(job_id).is_complete:  # only the call that can win
            self._fault(self.fail_before, "try_finalize_job")
        return super().try_finalize_job(job_id)


def flaky_job(store: FlakyStore, records: int = 20, batch_size: int = 5) -> str:
    return prepare_job(store, ({"n": i} for i in range(records)), batch_size=batch_size).job_id


def test_run_backs_off_after_a_store_error_and_tries_again() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 4
    pauses: list[float] = []
    summary = Worker(store, noop, sleep=pauses.append).run(job_id)
    assert (summary.store_errors, summary.batches, summary.processed) == (4, 4, 20)
    assert summary.finalized
    # Exponential from 0.1 s, each jittered into [ceiling / 2, ceiling].
    for pause, ceiling in zip(pauses, [0.1, 0.2, 0.4, 0.8], strict=True):
        assert ceiling / 2 <= pause <= ceiling
    assert_memory_job_done_once(store, job_id, 20)


def test_run_raises_the_store_error_after_the_limit_of_failures_in_a_row() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 1000
    pauses: list[float] = []
    worker = Worker(store, noop, sleep=pauses.append)
    worker.store_error_limit = 7
    worker.store_backoff_cap_s = 0.5
    with pytest.raises(pw.OperationalError, match="injected"):
        worker.run(job_id)
    assert store.raised == 8  # the limit outlived, the next one raised
    assert len(pauses) == 7
    assert max(pauses) <= 0.5 and pauses[-1] >= 0.25  # capped, still jittered


def test_each_store_error_outlived_is_an_event_and_the_raised_one_is_not() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 3
    events: list[WorkerEvent] = []
    summary = Worker(store, noop, sleep=lambda s: None, on_event=events.append).run(job_id)
    outlived = [e for e in events if isinstance(e, StoreErrorOutlived)]
    assert [e.in_a_row for e in outlived] == [1, 2, 3] == list(range(1, summary.store_errors + 1))
    assert {(e.job_id, e.worker_id) for e in outlived} == {(job_id, summary.worker_id)}
    assert all("injected" in e.error and "\n" not in e.error for e in outlived)

    failing = FlakyStore()
    failing_job = flaky_job(failing)
    failing.fail_before["claim_batch"] = 1000
    events.clear()
    worker = Worker(failing, noop, sleep=lambda s: None, on_event=events.append)
    worker.store_error_limit = 2
    with pytest.raises(pw.OperationalError, match="injected"):
        worker.run(failing_job)
    assert failing.raised == 3
    assert [e.in_a_row for e in events if isinstance(e, StoreErrorOutlived)] == [1, 2]


class TwoOfThreeClaimsFail(FlakyStore):
    """Every claim is preceded by two failed ones."""

    claims = 0

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult:
        self.claims += 1
        if self.claims % 3:
            self.raised += 1
            raise as_store_error(self.error())
        return super().claim_batch(job_id, worker_id)


def test_failures_in_a_row_are_counted_afresh_after_a_successful_round() -> None:
    store = TwoOfThreeClaimsFail()
    job_id = flaky_job(store, records=30, batch_size=5)
    worker = Worker(store, noop, sleep=lambda s: None)
    worker.store_error_limit = 2  # never more than 2 in a row, 14 in all
    summary = worker.run(job_id)
    assert (summary.batches, summary.processed, summary.finalized) == (6, 30, True)
    assert summary.store_errors == store.raised == 14  # 6 claims won + 1 finding none
    assert_memory_job_done_once(store, job_id, 30)


def test_a_batch_whose_records_could_not_be_read_is_released_and_done_later() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["get_batch_raw"] = 1
    summary = Worker(store, noop, sleep=lambda s: None).run(job_id)
    assert (summary.store_errors, summary.batches, summary.processed) == (1, 4, 20)
    assert_memory_job_done_once(store, job_id, 20)


def test_a_batch_whose_completion_failed_unwritten_is_processed_again() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["complete_batch"] = 1
    seen: list[int] = []
    summary = Worker(store, lambda r, c: seen.append(c.record_index), sleep=lambda s: None).run(
        job_id
    )
    assert (summary.store_errors, summary.batches, summary.processed) == (1, 4, 20)
    assert sorted(seen) == sorted([*range(20), *range(5)])  # batch 0 twice: at least once
    assert_memory_job_done_once(store, job_id, 20)


def test_a_completion_that_committed_unseen_is_not_written_again() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_after["complete_batch"] = 1
    seen: list[int] = []
    summary = Worker(store, lambda r, c: seen.append(c.record_index), sleep=lambda s: None).run(
        job_id
    )
    # Batch 0 landed though the worker saw an error: not released, not processed again;
    # the worker does not count it as its own.
    assert sorted(seen) == list(range(20))
    assert (summary.store_errors, summary.batches, summary.processed) == (1, 3, 15)
    assert summary.finalized
    assert_memory_job_done_once(store, job_id, 20)


def test_a_batch_written_when_finalizing_failed_counts_and_the_job_is_finalized_later() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["try_finalize_job"] = 1
    summary = Worker(store, noop, sleep=lambda s: None).run(job_id)
    assert store.raised == 1
    assert (summary.batches, summary.processed, summary.finalized) == (4, 20, True)
    assert_memory_job_done_once(store, job_id, 20)


@pytest.mark.parametrize(
    "error", [pw.IntegrityError, pw.ProgrammingError, pw.DataError, pw.NotSupportedError]
)
def test_errors_of_the_query_itself_are_raised_at_once(error: type[Exception]) -> None:
    store = FlakyStore(error=lambda: error("injected"))
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 1
    pauses: list[float] = []
    with pytest.raises(error, match="injected"):
        Worker(store, noop, sleep=pauses.append).run(job_id)
    assert pauses == []


@pytest.mark.parametrize("error", [pw.OperationalError, pw.InterfaceError, pw.InternalError])
def test_lost_server_errors_of_every_kind_are_outlived(error: type[Exception]) -> None:
    store = FlakyStore(error=lambda: error(0, "injected"))
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 2
    summary = Worker(store, noop, sleep=lambda s: None).run(job_id)
    assert (summary.store_errors, summary.processed, summary.finalized) == (2, 20, True)


def test_stop_during_a_store_outage_returns_without_raising() -> None:
    store = FlakyStore()
    job_id = flaky_job(store)
    store.fail_before["claim_batch"] = 1000
    worker = Worker(store, noop)
    worker.store_error_limit = 1000
    worker.store_backoff_cap_s = 0.05
    stopper = threading.Timer(0.3, worker.stop)
    stopper.start()
    summary = worker.run(job_id)
    stopper.join()
    assert summary.store_errors >= 3 and summary.batches == 0 and not summary.finalized
    job = store.get_job_state(job_id)
    assert job is not None and job.status == JobStatus.PROCESSING


def assert_memory_job_done_once(store: InMemoryStateStore, job_id: str, total: int) -> None:
    job = store.get_job_state(job_id)
    assert job is not None and job.status == JobStatus.COMPLETED
    assert all(b.status == BatchStatus.COMPLETED for b in job.batches)
    assert [r.index for r in store.get_processed_records(job_id)] == list(range(total))
    assert store.get_pending_records(job_id) == store.get_failed_records(job_id) == []


def test_a_worker_outlives_a_sqlite_write_lock_held_longer_than_the_store_retries(
    url_for: Callable[[str], str],
) -> None:
    path = url_for("sqlite").removeprefix("sqlite:///")
    database = pw.SqliteDatabase(path, timeout=0.01, pragmas={"journal_mode": "wal"})
    store = PeeweeStateStore(database)
    store.create_tables()
    job = prepare_job(store, ({"n": i} for i in range(200)), batch_size=50)
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # the write lock, held 2.5 s: the store retries ~1 s
    release = threading.Timer(2.5, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        summary = Worker(store, noop, lease_timeout_ms=5000).run(job.job_id)
        assert summary.store_errors >= 1
        assert (summary.batches, summary.processed, summary.finalized) == (4, 200, True)
        print(f"\n[restarts sqlite-lock] store errors outlived: {summary.store_errors}")
        assert_done_exactly_once(store, job.job_id, 200)
        holder.execute("BEGIN IMMEDIATE")  # no one holds the lock now
        holder.execute("COMMIT")
    finally:
        release.join()
        holder.close()
        database.close()
