"""Transient faults: lost connections and rolled-back transactions are retried safely.

A lost connection may hide a COMMIT that landed; the store then checks whether it did instead
of re-running the write blindly (a second claim, a refused completion, a lost finalization).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import BatchStatus, JobStatus, PeeweeStateStore
from batchactions_peewee.errors import StoreUnavailable
from batchactions_peewee.store.dialects import Dialect

from ..support.factories import job, record


class LostAfterCommit(pw.OperationalError):
    """Stands for a connection that died after the server committed."""


def lose_connection_after_commits(
    monkeypatch: pytest.MonkeyPatch, store: PeeweeStateStore, times: int
) -> list[int]:
    """The next ``times`` write transactions commit, then report a lost connection."""
    dialect = store.dialect
    original = type(dialect).write_transaction
    left = [times]

    @contextlib.contextmanager
    def write_transaction(self: Dialect, lock_first: bool = True) -> Iterator[None]:
        with original(self, lock_first):
            yield
        if left[0] > 0:
            left[0] -= 1
            raise LostAfterCommit("lost connection after COMMIT")

    def is_disconnect(exc: BaseException) -> bool:
        return isinstance(exc, LostAfterCommit)

    monkeypatch.setattr(dialect, "write_transaction", write_transaction.__get__(dialect))
    monkeypatch.setattr(dialect, "is_disconnect", is_disconnect)
    return left


def test_a_claim_that_committed_unseen_is_not_made_twice(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job(batches=3)
    peewee_store.save_job_state(j)
    peewee_store.force_cas_claim = False
    left = lose_connection_after_commits(monkeypatch, peewee_store, 1)
    if peewee_store.dialect.name != "sqlite" and not peewee_store._parts.coordination.skip_locked():
        pytest.skip("this server claims without a transaction")
    result = peewee_store.claim_batch(j.id, "w1")
    assert left == [0]
    assert result.reservation is not None and result.reservation.batch_index == 0
    status = peewee_store.get_distributed_status(j.id)
    assert (status.processing_batches, status.pending_batches) == (1, 2)
    assert peewee_store.complete_batch(result.reservation, processed_count=2, failed_count=0)


def test_a_completion_that_committed_unseen_reports_success(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job(batches=1)
    peewee_store.save_job_state(j)
    r = peewee_store.claim_batch(j.id, "w1").reservation
    assert r is not None
    left = lose_connection_after_commits(monkeypatch, peewee_store, 1)
    assert peewee_store.complete_batch(
        r, processed_count=1, failed_count=0, records=[record(0, "processed")]
    )
    assert left == [0]
    assert [x.index for x in peewee_store.get_processed_records(j.id)] == [0]


def test_a_completion_whose_commit_lands_after_its_probe_looked_reports_success(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server may apply a COMMIT sent just before the connection died later than the
    probe on a new connection reads: the completion is then sent again, finds its batch
    changed, and must see that the change is its own (not report a lease lost)."""
    j = job(batches=1)
    peewee_store.save_job_state(j)
    r = peewee_store.claim_batch(j.id, "w1").reservation
    assert r is not None
    session = peewee_store._parts.coordination.session
    probes: list[bool] = []
    real_exists = session.exists

    def probe_too_early(sql: str, params: Any) -> bool:
        if not probes:  # the first probe reads before the COMMIT is applied
            probes.append(False)
            return False
        probes.append(real_exists(sql, params))
        return probes[-1]

    monkeypatch.setattr(session, "exists", probe_too_early)
    left = lose_connection_after_commits(monkeypatch, peewee_store, 1)
    assert peewee_store.complete_batch(
        r, processed_count=1, failed_count=0, records=[record(0, "processed")]
    )
    assert left == [0]
    assert probes == [False, True]
    assert [x.index for x in peewee_store.get_processed_records(j.id)] == [0]
    status = peewee_store.get_distributed_status(j.id)
    assert (status.completed_batches, status.processing_batches) == (1, 0)


def test_a_finalization_that_committed_unseen_still_has_exactly_one_winner(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job(batches=1)
    peewee_store.save_job_state(j)
    r = peewee_store.claim_batch(j.id, "w1").reservation
    assert r is not None
    peewee_store.complete_batch(r, status=BatchStatus.FAILED, processed_count=0, failed_count=2)
    left = lose_connection_after_commits(monkeypatch, peewee_store, 1)
    assert peewee_store.try_finalize_job(j.id) is True
    assert left == [0]
    assert peewee_store.try_finalize_job(j.id) is False
    state = peewee_store.get_job_state(j.id)
    assert state is not None and state.status == JobStatus.FAILED


def test_idempotent_writes_are_simply_re_run(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = job(batches=1)
    left = lose_connection_after_commits(monkeypatch, peewee_store, 2)
    peewee_store.save_job_state(j)
    peewee_store.save_batch_records(j.id, j.batches[0].id, [record(0), record(1)])
    assert left == [0]
    assert peewee_store.get_job_state(j.id) == j
    assert len(peewee_store.get_pending_records(j.id)) == 2


def test_retries_are_bounded(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchactions_peewee.store.session.backoff_delay", lambda attempt: 0.0)
    lose_connection_after_commits(monkeypatch, peewee_store, 1000)
    with pytest.raises(StoreUnavailable) as raised:
        peewee_store.save_job_state(job())
    assert isinstance(raised.value.__cause__, LostAfterCommit)


def _session_id(database: pw.Database, kind: str) -> int:
    sql = "SELECT CONNECTION_ID()" if kind == "mysql" else "SELECT pg_backend_pid()"
    cursor: Any = database.execute_sql(sql)  # type: ignore[no-untyped-call]
    return int(cursor.fetchone()[0])


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
def test_a_killed_server_session_is_replaced_transparently(
    kind: str, url_for: Callable[[str], str]
) -> None:
    from ..support.backends import open_database
    from ..support.stores import make_store

    url = url_for(kind)
    store, database = make_store(url)
    admin = open_database(url)
    kill = "KILL {}" if kind == "mysql" else "SELECT pg_terminate_backend({})"
    try:
        j = job(batches=3)
        store.save_job_state(j)
        operations: list[Callable[[], object]] = [
            lambda: store.claim_batch(j.id, "w1"),
            lambda: store.get_job_state(j.id),
            lambda: store.save_batch_records(j.id, j.batches[2].id, [record(5)]),
            lambda: store.reclaim_stale_batches(j.id, 60_000),
            lambda: store.get_progress(j.id),
        ]
        for operation in operations:
            admin.execute_sql(kill.format(_session_id(database, kind)))  # type: ignore[no-untyped-call]
            operation()
        status = store.get_distributed_status(j.id)
        assert (status.processing_batches, status.pending_batches) == (1, 2)
        assert [r.index for r in store.get_pending_records(j.id)] == [5]
    finally:
        store.drop_tables()
        database.close()
        admin.close()


SERVER_DEADLOCK = {
    "mysql": "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'injected deadlock'",
    "postgres": "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40P01'; END $$",
}
SERVER_LOCK_WAIT = {
    "mysql": "SIGNAL SQLSTATE 'HY000' SET MYSQL_ERRNO = 1205, MESSAGE_TEXT = 'injected timeout'",
    "postgres": "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '40001'; END $$",
}


@pytest.fixture(params=["mysql", "postgres"])
def server_store(
    request: pytest.FixtureRequest, url_for: Callable[[str], str]
) -> Iterator[PeeweeStateStore]:
    from ..support.stores import make_store

    store, database = make_store(url_for(request.param))
    yield store
    store.drop_tables()
    database.close()


@pytest.mark.parametrize("fault", [SERVER_DEADLOCK, SERVER_LOCK_WAIT])
def test_server_errors_that_roll_back_are_retried(
    server_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch, fault: dict[str, str]
) -> None:
    peewee_store = server_store
    kind = peewee_store.dialect.name
    dialect = peewee_store.dialect
    original = type(dialect).write_transaction
    raised = [0]

    @contextlib.contextmanager
    def failing_once(self: Dialect, lock_first: bool = True) -> Iterator[None]:
        with original(self, lock_first):
            yield
            if raised[0] == 0:
                raised[0] += 1
                self.database.execute_sql(fault[kind])  # type: ignore[no-untyped-call]

    monkeypatch.setattr(dialect, "write_transaction", failing_once.__get__(dialect))
    j = job(batches=2)
    peewee_store.save_job_state(j)
    assert raised == [1]
    assert peewee_store.get_job_state(j.id) == j
    assert peewee_store.get_distributed_status(j.id).pending_batches == 2


def test_sqlite_writes_wait_for_another_connection_holding_the_write_lock(
    url_for: Callable[[str], str],
) -> None:
    import sqlite3
    import threading

    url = url_for("sqlite")
    path = url.removeprefix("sqlite:///")
    database = pw.SqliteDatabase(path, timeout=0.01)  # busy errors surface at once
    store = PeeweeStateStore(database)
    store.create_tables()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        j = job(batches=1)
        store.save_job_state(j)  # retried with backoff until the lock is released
        assert store.get_job_state(j.id) == j
    finally:
        release.join()
        holder.close()
        database.close()
