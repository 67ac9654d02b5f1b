"""Coordination under real concurrency, and one test per defect the reference adapter had.

(a) saving a distributed job creates its batch rows; re-saving never resets one;
(b) a claimer that loses a race moves on: NO_PENDING_BATCHES only when none is left;
(c) claims do not rewrite the job row's JSON batch list; get_job_state reads live state;
(d) one clock: lease ages use the store's clock (injected or the database's);
(e) fencing: a slow worker cannot overwrite the new owner; state and records commit together;
(f) SQLite writers in many threads and processes never fail with "database is locked";
(g) every conditional update's row count is truthful (MySQL counts rows *changed*).

The last tests run 12 threads and 4 spawned processes against one 200-batch job on SQLite
(WAL and rollback journal), MariaDB and PostgreSQL, over both claim paths, and print the
claim throughput they observe (not asserted: timings belong to benchmarks/).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import (
    BatchStatus,
    ClaimBatchResult,
    ClaimFailureReason,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    RecordStatus,
)

from ..support.concurrency import HAMMER_ROUNDS, PLAIN_SQLITE, ROUTINES, process_main
from ..support.factories import distributed_job
from ..support.stores import (
    ALL_BACKENDS,
    SERVER_KINDS,
    FakeClock,
    Store,
    make_store,
    open_store,
    same_tables,
)

LEASE_MS = 60_000
#: Each server with its SKIP LOCKED claim and with the compare-and-set claim forced.
SERVER_PATHS = [(kind, cas) for kind in SERVER_KINDS for cas in (False, True)]
CLAIM_PATHS = [("sqlite", False), *SERVER_PATHS]


def path_id(kind: str, cas: bool) -> str:
    return f"{kind}-cas" if cas else kind


def records_of(
    worker: str, indexes: range, status: RecordStatus = RecordStatus.PROCESSED
) -> list[ProcessedRecord]:
    return [
        ProcessedRecord(index=i, raw={"i": i}, parsed={"by": worker}, status=status)
        for i in indexes
    ]


@contextmanager
def clocked_store(kind: str, url_for: Callable[[str], str]) -> Iterator[tuple[Store, FakeClock]]:
    clock = FakeClock()
    with open_store(kind, url_for, clock) as store:
        yield store, clock


# -- (a) saving a distributed job ---------------------------------------------------------


def test_saving_a_distributed_job_creates_a_pending_row_per_batch(store: Store) -> None:
    job = distributed_job(3)
    store.save_job_state(job)
    status = store.get_distributed_status(job.id)
    assert (status.total_batches, status.pending_batches, status.processing_batches) == (3, 3, 0)
    claimed = [store.claim_batch(job.id, f"w{i}").reservation for i in range(3)]
    assert [r.batch_index for r in claimed if r] == [0, 1, 2]


def test_resaving_a_distributed_job_never_resets_an_existing_batch_row(store: Store) -> None:
    job = distributed_job(3)
    store.save_job_state(job)
    held = store.claim_batch(job.id, "holder").reservation
    done = store.claim_batch(job.id, "finisher").reservation
    assert held is not None and done is not None
    assert store.complete_batch(
        done, processed_count=1, failed_count=0, records=records_of("finisher", range(1, 2))
    )

    store.save_job_state(job)  # the caller's copy still says every batch is PENDING

    batches = store.get_job_state(job.id).batches  # type: ignore[union-attr]
    assert [(b.status, b.worker_id) for b in batches] == [
        (BatchStatus.PROCESSING, "holder"),
        (BatchStatus.COMPLETED, "finisher"),
        (BatchStatus.PENDING, None),
    ]
    assert batches[1].processed_count == 1
    assert store.heartbeat(held), "the claim made before the re-save must still hold"
    nxt = store.claim_batch(job.id, "third").reservation
    assert nxt is not None and nxt.batch_index == 2


def test_resaving_a_distributed_job_with_a_new_batch_adds_only_that_row(store: Store) -> None:
    job = distributed_job(3)
    store.save_job_state(job)
    first = store.claim_batch(job.id, "w").reservation
    assert first is not None and first.batch_index == 0
    grown = distributed_job(4)
    grown = grown.model_copy(
        update={"id": job.id, "batches": [*job.batches, grown.batches[3]], "total_records": 4}
    )
    store.save_job_state(grown)
    status = store.get_distributed_status(job.id)
    assert (status.total_batches, status.pending_batches, status.processing_batches) == (4, 3, 1)


# -- (b) losing a race --------------------------------------------------------------------


def race_to_claim(
    store: PeeweeStateStore, job_id: str, claimers: int
) -> dict[int, ClaimBatchResult | BaseException]:
    """``claimers`` threads claim at once (released together by a barrier)."""
    start = threading.Barrier(claimers)
    results: dict[int, ClaimBatchResult | BaseException] = {}

    def claim(i: int) -> None:
        try:
            start.wait(timeout=30)
            results[i] = store.claim_batch(job_id, f"w{i}")
        except BaseException as exc:
            results[i] = exc
        finally:
            store.dialect.database.close()  # this thread's connection

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.mark.parametrize(("kind", "cas"), CLAIM_PATHS, ids=[path_id(*p) for p in CLAIM_PATHS])
def test_claimers_racing_for_as_many_batches_as_claimers_all_get_one(
    kind: str, cas: bool, url_for: Callable[[str], str]
) -> None:
    claimers, rounds = 8, 5
    store, database = make_store(url_for(kind))
    store.force_cas_claim = cas
    try:
        for _ in range(rounds):
            job = distributed_job(claimers)
            store.save_job_state(job)
            results = race_to_claim(store, job.id, claimers)
            assert len(results) == claimers
            assert all(isinstance(r, ClaimBatchResult) and r.claimed for r in results.values()), (
                f"a claimer lost a race and gave up while batches were pending: {results}"
            )
            indexes = sorted(
                r.reservation.batch_index
                for r in results.values()
                if isinstance(r, ClaimBatchResult) and r.reservation
            )
            assert indexes == list(range(claimers))
    finally:
        store.drop_tables()
        database.close()


class RivalClock(FakeClock):
    """A clock that lets a rival worker claim ``steal`` batches the moment it is read, i.e.
    between the claimer's read of its candidates and its conditional UPDATE."""

    def __init__(self) -> None:
        super().__init__()
        self.rival: PeeweeStateStore | None = None
        self.job_id = ""
        self.steal = 0
        self.stolen: list[int] = []

    def __call__(self) -> int:
        steal, self.steal = self.steal, 0
        for _ in range(steal):
            assert self.rival is not None
            taken = self.rival.claim_batch(self.job_id, "rival").reservation
            if taken is not None:
                self.stolen.append(taken.batch_index)
        return self.now


@pytest.mark.parametrize(("kind", "cas"), SERVER_PATHS, ids=[path_id(*p) for p in SERVER_PATHS])
def test_a_claimer_that_loses_the_race_for_its_candidates_moves_on_to_the_next(
    kind: str, cas: bool, url_for: Callable[[str], str]
) -> None:
    """SQLite has no such race (its claim holds the only write lock); the servers do."""
    clock = RivalClock()
    url = url_for(kind)
    store, database = make_store(url, clock=clock)
    store.force_cas_claim = cas
    try:
        with same_tables(store, url, clock=FakeClock()) as rival:
            rival.force_cas_claim = cas
            # The rival runs inside the claimer's call: were it to wait for a lock the
            # claimer holds, it would wait forever. Fail fast instead.
            rival_db: Any = rival.dialect.database
            rival_db.execute_sql(
                "SET SESSION innodb_lock_wait_timeout = 2"
                if kind == "mysql"
                else "SET lock_timeout = '2s'"
            )
            job = distributed_job(20)
            store.save_job_state(job)
            clock.rival, clock.job_id = rival, job.id
            # More than one window of candidates is taken from under the claimer.
            clock.steal = 17
            result = store.claim_batch(job.id, "claimer")
            assert result.claimed, f"gave up with {result.reason} while 3 batches were pending"
            assert result.reservation is not None
            mine = result.reservation.batch_index
            # Compare-and-set loses batches 0-16 and moves on to 17; SKIP LOCKED holds the
            # lock on batch 0, so the rival skips it and takes 1-17.
            assert mine == (17 if cas else 0)
            assert sorted([mine, *clock.stolen]) == list(range(18))
            status = store.get_distributed_status(job.id)
            assert (status.processing_batches, status.pending_batches) == (18, 2)
            if cas:
                # When the rival takes everything left, NO_PENDING_BATCHES is the truth.
                clock.steal = 5
                last = store.claim_batch(job.id, "claimer")
                assert last.reason == ClaimFailureReason.NO_PENDING_BATCHES
                assert store.get_distributed_status(job.id).pending_batches == 0
    finally:
        store.drop_tables()
        database.close()


# -- (c) the job row's batch list ---------------------------------------------------------


def test_get_job_state_reads_live_batch_state(store: Store) -> None:
    job = distributed_job(3, records_per_batch=2)
    store.save_job_state(job)
    held = store.claim_batch(job.id, "holder").reservation
    done = store.claim_batch(job.id, "finisher").reservation
    assert held is not None and done is not None
    assert store.complete_batch(
        done,
        status=BatchStatus.FAILED,
        processed_count=1,
        failed_count=1,
        records=records_of("finisher", range(2, 3))
        + records_of("finisher", range(3, 4), RecordStatus.FAILED),
    )
    live = store.get_job_state(job.id)
    assert live is not None
    assert [
        (b.status, b.worker_id, b.claimed_at, b.processed_count, b.failed_count)
        for b in live.batches
    ] == [
        (BatchStatus.PROCESSING, "holder", held.claimed_at, 0, 0),
        (BatchStatus.FAILED, "finisher", done.claimed_at, 1, 1),
        (BatchStatus.PENDING, None, None, 0, 0),
    ]
    assert store.get_progress(job.id).current_batch == 0


def test_claims_and_completions_leave_the_job_rows_batch_list_untouched(
    peewee_store: PeeweeStateStore,
) -> None:
    now = [1_000]  # the store's clock, moved by hand: the reclaim below is certain
    store = PeeweeStateStore(
        peewee_store.database, table_prefix=peewee_store.table_prefix, clock=lambda: now[0]
    )
    job = distributed_job(4)
    store.save_job_state(job)
    J = store.tables.jobs

    def batch_list() -> Any:
        return J.select(J.batches).where(J.id == job.id).scalar()

    before = batch_list()
    first = store.claim_batch(job.id, "w1").reservation
    second = store.claim_batch(job.id, "w2").reservation
    assert first is not None and second is not None
    assert store.heartbeat(first)
    assert store.complete_batch(second, processed_count=1, failed_count=0)
    assert store._release_reservation(first)
    assert store.claim_batch(job.id, "w3").claimed
    now[0] += 10  # past w3's claim: its batch is the one stale batch
    assert store.reclaim_stale_batches(job.id, 0) == 1
    assert batch_list() == before, "the job row was rewritten by a per-batch operation"


# -- (d) one clock ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_lease_ages_follow_the_injected_clock_not_the_machines_clock(
    kind: str, url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with clocked_store(kind, url_for) as (store, clock):
        job = distributed_job(1)
        store.save_job_state(job)
        # This machine's clock is a day ahead: the store must not care.
        real_time = time.time
        monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)
        r = store.claim_batch(job.id, "w").reservation
        assert r is not None and r.claimed_at == clock.now
        assert store.get_job_state(job.id).batches[0].claimed_at == clock.now  # type: ignore[union-attr]
        assert store.reclaim_stale_batches(job.id, LEASE_MS) == 0
        clock.advance(LEASE_MS)
        assert store.reclaim_stale_batches(job.id, LEASE_MS) == 0, "exactly LEASE_MS is not stale"
        clock.advance(1)
        assert store.reclaim_stale_batches(job.id, LEASE_MS) == 1
        assert not store.heartbeat(r)


def server_now_ms(store: PeeweeStateStore) -> int:
    sql = store.dialect.now_sql
    assert sql is not None
    database: Any = store.dialect.database
    cursor = database.execute_sql(sql)
    return int(cursor.fetchone()[0])


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_without_a_clock_lease_ages_use_the_database_servers_clock(
    kind: str, url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers whose machine clocks are an hour off either way still agree on lease ages."""
    url = url_for(kind)
    store, database = make_store(url)
    real_time = time.time
    hour = 3_600
    try:
        job = distributed_job(1)
        store.save_job_state(job)
        # A session time zone far from UTC must not shift the server's epoch clock.
        database.execute_sql(  # type: ignore[no-untyped-call]
            "SET time_zone = '+05:45'" if kind == "mysql" else "SET TIME ZONE 'Asia/Kathmandu'"
        )
        monkeypatch.setattr(time, "time", lambda: real_time() + hour)  # a machine running ahead
        before = server_now_ms(store)
        r = store.claim_batch(job.id, "ahead").reservation
        after = server_now_ms(store)
        assert r is not None
        assert before - 1_000 <= r.claimed_at <= after + 1_000, "claim time is not the server's"
        # The test servers run on this machine, so the server's epoch is the real one.
        assert abs(r.claimed_at - real_time() * 1000) < 60_000, "server clock is not epoch UTC"
        with same_tables(store, url) as behind:
            monkeypatch.setattr(time, "time", lambda: real_time() - hour)  # one running behind
            assert behind.reclaim_stale_batches(job.id, LEASE_MS) == 0
            assert behind.heartbeat(r)
            renewed = behind.get_job_state(job.id).batches[0].claimed_at  # type: ignore[union-attr]
            assert renewed is not None and abs(renewed - server_now_ms(behind)) < 60_000
        monkeypatch.setattr(time, "time", lambda: real_time() + hour)
        assert store.reclaim_stale_batches(job.id, LEASE_MS) == 0
        assert store.heartbeat(r), "the lease must still be held after both reclaims"
    finally:
        monkeypatch.undo()
        store.drop_tables()
        database.close()


# -- (e) fencing --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_a_slow_worker_whose_batch_was_reclaimed_cannot_overwrite_the_new_owner(
    kind: str, url_for: Callable[[str], str]
) -> None:
    with clocked_store(kind, url_for) as (store, clock):
        job = distributed_job(1, records_per_batch=2)
        store.save_job_state(job)
        slow = store.claim_batch(job.id, "slow").reservation
        assert slow is not None
        clock.advance(LEASE_MS + 1)
        assert store.reclaim_stale_batches(job.id, LEASE_MS) == 1
        fast = store.claim_batch(job.id, "fast").reservation
        assert fast is not None and fast.batch_id == slow.batch_id
        assert fast.version > slow.version

        def slow_writes_fail() -> None:
            assert not store.heartbeat(slow)
            assert not store.complete_batch(
                slow,
                status=BatchStatus.FAILED,
                processed_count=0,
                failed_count=2,
                records=[
                    ProcessedRecord(index=i, raw={}, parsed={"by": "slow"}, status="failed")
                    for i in (0, 1)
                ],
            )
            assert not store._release_reservation(slow)
            store.release_batch(job.id, slow.batch_id, "slow")  # not the holder: no effect

        slow_writes_fail()  # while the new owner works
        batch = store.get_job_state(job.id).batches[0]  # type: ignore[union-attr]
        assert (batch.status, batch.worker_id) == (BatchStatus.PROCESSING, "fast")
        assert store.get_batch_records(job.id, slow.batch_id) == []
        assert store.heartbeat(fast)

        mine = records_of("fast", range(2))
        assert store.complete_batch(fast, processed_count=2, failed_count=0, records=mine)
        slow_writes_fail()  # after the new owner finished
        batch = store.get_job_state(job.id).batches[0]  # type: ignore[union-attr]
        assert (batch.status, batch.processed_count, batch.failed_count) == (
            BatchStatus.COMPLETED,
            2,
            0,
        )
        assert store.get_batch_records(job.id, slow.batch_id) == mine
        assert store.try_finalize_job(job.id)
        assert store.get_job_state(job.id).status == JobStatus.COMPLETED  # type: ignore[union-attr]


def test_complete_batch_commits_state_and_records_together_or_not_at_all(
    peewee_store: PeeweeStateStore,
) -> None:
    store = peewee_store
    job = distributed_job(1, records_per_batch=3)
    store.save_job_state(job)
    r = store.claim_batch(job.id, "w").reservation
    assert r is not None
    records = records_of("w", range(3))
    store.tables.records.drop_table()  # the records write will fail after the state UPDATE
    with pytest.raises(pw.DatabaseError):
        store.complete_batch(r, processed_count=3, failed_count=0, records=records)
    store.create_tables()

    batch = store.get_job_state(job.id).batches[0]  # type: ignore[union-attr]
    assert (batch.status, batch.processed_count) == (BatchStatus.PROCESSING, 0), (
        "the batch state committed without its records"
    )
    assert store.heartbeat(r), "the failed completion must not have moved the fencing token"
    assert store.complete_batch(r, processed_count=3, failed_count=0, records=records)
    assert store.get_batch_records(job.id, r.batch_id) == records


# -- (g) truthful row counts --------------------------------------------------------------


@pytest.mark.parametrize("kind", ALL_BACKENDS)
def test_conditional_updates_report_truthfully_with_a_frozen_clock(
    kind: str, url_for: Callable[[str], str]
) -> None:
    """MySQL counts rows *changed*: an UPDATE that writes the values a row already has
    reports 0. With a frozen clock, every held lease must still be reported as renewed."""
    with clocked_store(kind, url_for) as (store, clock):
        job = distributed_job(2)
        store.save_job_state(job)
        r = store.claim_batch(job.id, "w").reservation
        assert r is not None
        assert [store.heartbeat(r) for _ in range(3)] == [True, True, True]
        assert store._release_reservation(r)
        again = store.claim_batch(job.id, "w").reservation  # same worker, same millisecond
        assert again is not None and again.batch_id == r.batch_id
        assert store.heartbeat(again) and store.heartbeat(again)
        assert not store.heartbeat(r) and not store._release_reservation(r)
        assert store.reclaim_stale_batches(job.id, 0) == 0
        clock.advance(1)
        # Renewed three times in the same millisecond, the lease runs ahead of the clock.
        assert store.reclaim_stale_batches(job.id, 0) == 0
        clock.advance(5)
        assert store.reclaim_stale_batches(job.id, 0) == 1
        for _ in range(2):
            got = store.claim_batch(job.id, "w").reservation
            assert got is not None
            assert store.complete_batch(got, processed_count=0, failed_count=0)
        assert store.try_finalize_job(job.id)
        assert not store.try_finalize_job(job.id)


# -- lost connections in the middle of a decisive write ------------------------------------


class KillingClock(FakeClock):
    """A frozen clock that runs ``action`` (once) the next time the store reads it: inside
    the store's write, after its reads and before its decisive UPDATE."""

    def __init__(self) -> None:
        super().__init__()
        self.action: Callable[[], None] | None = None

    def __call__(self) -> int:
        action, self.action = self.action, None
        if action is not None:
            action()
        return self.now


def connection_id(store: PeeweeStateStore, kind: str) -> int:
    """The server's id of this thread's connection of ``store``."""
    database: Any = store.dialect.database
    sql = "SELECT CONNECTION_ID()" if kind == "mysql" else "SELECT pg_backend_pid()"
    return int(database.execute_sql(sql).fetchone()[0])


def kill_connection(killer: PeeweeStateStore, kind: str, victim: int) -> None:
    """Cut connection ``victim`` from the server side, and wait until it is gone."""
    database: Any = killer.dialect.database
    if kind == "mysql":
        database.execute_sql(f"KILL CONNECTION {victim}")
        alive = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
    else:
        database.execute_sql(f"SELECT pg_terminate_backend({victim})")
        alive = "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = %s"
    deadline = time.monotonic() + 10
    while database.execute_sql(alive, (victim,)).fetchone()[0]:
        assert time.monotonic() < deadline, f"connection {victim} survived its kill"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_a_finalizer_whose_connection_dies_is_not_a_second_finalizer(
    kind: str, url_for: Callable[[str], str]
) -> None:
    clock = KillingClock()
    url = url_for(kind)
    store, database = make_store(url, clock=clock)
    try:
        with same_tables(store, url, clock=FakeClock(clock.now)) as other:
            job = distributed_job(1)
            store.save_job_state(job)
            r = store.claim_batch(job.id, "w").reservation
            assert r is not None
            assert store.complete_batch(r, processed_count=0, failed_count=0)
            victim = connection_id(store, kind)
            results: list[bool] = []

            def another_finalizer_wins_then_our_connection_dies() -> None:
                results.append(other.try_finalize_job(job.id))
                kill_connection(other, kind, victim)

            clock.action = another_finalizer_wins_then_our_connection_dies
            results.append(store.try_finalize_job(job.id))
            assert results == [True, False], "exactly one finalizer"
    finally:
        store.drop_tables()
        database.close()


@pytest.mark.parametrize(("kind", "cas"), SERVER_PATHS, ids=[path_id(*p) for p in SERVER_PATHS])
def test_a_claim_whose_connection_dies_does_not_return_a_batch_already_held(
    kind: str, cas: bool, url_for: Callable[[str], str]
) -> None:
    clock = KillingClock()
    url = url_for(kind)
    store, database = make_store(url, clock=clock)
    store.force_cas_claim = cas
    try:
        with same_tables(store, url) as killer:
            job = distributed_job(2)
            store.save_job_state(job)
            held = store.claim_batch(job.id, "w").reservation
            assert held is not None and held.batch_index == 0
            victim = connection_id(store, kind)
            clock.action = lambda: kill_connection(killer, kind, victim)
            again = store.claim_batch(job.id, "w").reservation  # same worker, same millisecond
            assert again is not None
            assert again.batch_index == 1, f"got batch {again.batch_index}, already held"
    finally:
        store.drop_tables()
        database.close()


# -- (f) and real concurrency: threads and processes on one 200-batch job -----------------

THREADS = 12
PROCESSES = 4
BATCHES = 200
CONCURRENT = [
    ("sqlite", False),
    ("sqlite-rollback-journal", False),
    *SERVER_PATHS,
]


@contextmanager
def concurrent_store(kind: str, url_for: Callable[[str], str]) -> Iterator[tuple[str, Any]]:
    """(url for the worker processes, store) on fresh tables."""
    if kind == "sqlite-rollback-journal":
        # How a user opens SQLite without tuning: Peewee's defaults, no WAL.
        path = url_for("sqlite").removeprefix("sqlite:///")
        plain: Any = pw.SqliteDatabase(path)
        store = PeeweeStateStore(plain, table_prefix="plain_")
        store.create_tables()
        assert plain.execute_sql("PRAGMA journal_mode").fetchone()[0] == "delete"
        database: pw.Database = plain
        url = PLAIN_SQLITE + path
    else:
        url = url_for(kind)
        store, database = make_store(url)
    try:
        yield url, store
    finally:
        store.drop_tables()
        database.close()


def run_workers(
    url: str, store: PeeweeStateStore, job_id: str, tmp_path: Path, routine: str = "work"
) -> list[dict[str, Any]]:
    """THREADS threads (sharing ``store``) and PROCESSES spawned processes (each with its
    own connection) run ``routine`` on the job, all released at once; their reports."""
    spawn = multiprocessing.get_context("spawn")
    start = spawn.Barrier(THREADS + PROCESSES)
    paths = [tmp_path / f"{routine}-p{i}.json" for i in range(PROCESSES)]
    cas = store.force_cas_claim
    processes = [
        spawn.Process(
            target=process_main,
            args=(url, store.table_prefix, job_id, f"p{i}", cas, start, str(path), routine),
        )
        for i, path in enumerate(paths)
    ]
    reports: list[dict[str, Any]] = []

    def thread_main(worker_id: str) -> None:
        try:
            reports.append(ROUTINES[routine](store, job_id, worker_id, start))
        finally:
            store.dialect.database.close()  # this thread's connection

    threads = [threading.Thread(target=thread_main, args=(f"t{i}",)) for i in range(THREADS)]
    for p in processes:
        p.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    for p in processes:
        p.join(timeout=240)
    assert not [t for t in threads if t.is_alive()], "a worker thread hung"
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    reports += [json.loads(path.read_text()) for path in paths]
    assert len(reports) == THREADS + PROCESSES
    errors = [e for r in reports for e in r["errors"]]
    assert not errors, "exceptions escaped:\n" + "\n".join(errors)
    return reports


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "sqlite-rollback-journal"])
def test_sqlite_writers_in_threads_and_processes_never_fail_with_database_is_locked(
    kind: str, url_for: Callable[[str], str], tmp_path: Path
) -> None:
    with concurrent_store(kind, url_for) as (url, store):
        job = distributed_job(8)
        store.save_job_state(job)
        reports = run_workers(url, store, job.id, tmp_path, routine="hammer")
        assert [r["rounds"] for r in reports] == [HAMMER_ROUNDS] * len(reports)
        assert sum(r["claims"] for r in reports) > 0
        status = store.get_distributed_status(job.id)
        assert (status.pending_batches, status.processing_batches) == (8, 0)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "cas"), CONCURRENT, ids=[path_id(*p) for p in CONCURRENT])
def test_threads_and_processes_complete_every_batch_exactly_once(
    kind: str,
    cas: bool,
    url_for: Callable[[str], str],
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    with concurrent_store(kind, url_for) as (url, store):
        store.force_cas_claim = cas
        job = distributed_job(BATCHES)
        store.save_job_state(job)
        reports = run_workers(url, store, job.id, tmp_path)

        done = Counter(i for r in reports for i in r["completed"])
        assert sorted(done) == list(range(BATCHES)) and set(done.values()) == {1}, (
            "every batch must be completed exactly once"
        )
        assert [i for r in reports for i in r["refused"]] == []
        assert sum(r["heartbeats_refused"] for r in reports) == 0
        for r in reports:
            assert r["end_reason"] == "NO_PENDING_BATCHES" or (
                r["end_reason"] == "JOB_NOT_PROCESSING" and r["job_status_after_end"] == "COMPLETED"
            ), r
        assert {r["pending_after_end"] for r in reports} == {0}, (
            "a worker stopped while batches were still pending"
        )
        assert sum(r["finalized"] for r in reports) == 1, "exactly one finalizer"

        final = store.get_job_state(job.id)
        assert final is not None and final.status == JobStatus.COMPLETED
        assert store.get_distributed_status(job.id).completed_batches == BATCHES
        by = {i: r["worker"] for r in reports for i in r["completed"]}
        stored = store.get_processed_records(job.id)
        assert [(rec.index, rec.parsed["worker"]) for rec in stored] == [
            (i, by[i]) for i in range(BATCHES)
        ]

        first = min(r["first_claim"] for r in reports)
        last = max(r["last_claim"] for r in reports)
        claims = sum(r["claims"] for r in reports)
        per_claim_ms = 1000 * sum(r["claim_seconds"] for r in reports) / (claims + len(reports))
        throughput = claims / (last - first)
        spread = sorted(len(r["completed"]) for r in reports)
        print(
            f"\n{path_id(kind, cas)}: {claims} claims by {THREADS} threads + {PROCESSES} "
            f"processes in {last - first:.2f}s = {throughput:.0f} claims/s "
            f"(mean claim {per_claim_ms:.1f} ms; batches per worker {spread})"
        )
        record_property("claims_per_second", round(throughput, 1))
