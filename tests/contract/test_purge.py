"""purge_jobs deletes old finished jobs with their records and batches, and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from batchactions_peewee import (
    JobStatus,
    PeeweeStateStore,
    prepare_job,
)
from batchactions_peewee.errors import InvalidInputError, InvalidStatusError, InvalidValueError

from ..support.factories import START_MS, job
from ..support.stores import CONTRACT_BACKENDS, AnyStore, open_any_store

DAY_MS = 86_400_000


@pytest.fixture(params=CONTRACT_BACKENDS)
def clocked(
    request: pytest.FixtureRequest, url_for: Callable[[str], str]
) -> Iterator[tuple[AnyStore, list[int]]]:
    """A fresh store on each backend whose clock the test moves: ``now[0]``."""
    now = [START_MS]
    with open_any_store(request.param, url_for, clock=lambda: now[0]) as store:
        yield store, now


def test_purge_deletes_old_finished_jobs_with_their_rows_and_keeps_the_rest(
    clocked: tuple[AnyStore, list[int]],
) -> None:
    store, now = clocked
    done = prepare_job(store, ({"n": i} for i in range(25)), batch_size=10).job_id
    for _ in range(3):
        r = store.claim_batch(done, "w").reservation
        assert r is not None
        count = r.record_end_index - r.record_start_index + 1
        assert store.complete_batch(r, processed_count=count, failed_count=0)
    assert store.try_finalize_job(done)
    aborted = prepare_job(store, ({"n": i} for i in range(5)), batch_size=10).job_id
    assert store.abort_job(aborted)
    running = prepare_job(store, ({"n": i} for i in range(5)), batch_size=10).job_id
    paused = prepare_job(store, ({"n": i} for i in range(5)), batch_size=10).job_id
    assert store.pause_job(paused)
    left_created = job(batches=1, status=JobStatus.CREATED)
    store.save_job_state(left_created.model_copy(update={"started_at": START_MS}))
    now[0] += 2 * DAY_MS
    fresh = prepare_job(store, ({"n": i} for i in range(5)), batch_size=10).job_id
    assert store.abort_job(fresh)

    assert sorted(store.purge_candidates(older_than_ms=DAY_MS)) == sorted([done, aborted])
    assert store.purge_jobs(older_than_ms=DAY_MS) == 2
    for gone in (done, aborted):
        assert store.get_job_state(gone) is None
        assert store.get_processed_records(gone) == store.get_pending_records(gone) == []
        assert store.get_distributed_status(gone).total_batches == 0
    kept = {j.id for j in store.list_jobs()}
    assert kept == {running, paused, left_created.id, fresh}
    assert len(store.get_pending_records(running)) == 5, "a running job's rows are kept"
    assert store.purge_jobs(older_than_ms=DAY_MS) == 0, "nothing left to purge"
    # A CREATED job left by a killed prepare goes only when asked for.
    assert store.purge_jobs(older_than_ms=DAY_MS, statuses=[JobStatus.CREATED]) == 1
    assert store.get_job_state(left_created.id) is None
    assert {j.id for j in store.list_jobs()} == {running, paused, fresh}


@pytest.mark.parametrize("bad", [[JobStatus.PROCESSING], ["PAUSED", "COMPLETED"], []])
def test_purge_refuses_running_statuses_and_writes_nothing(
    clocked: tuple[AnyStore, list[int]], bad: list[str]
) -> None:
    store, now = clocked
    job_id = prepare_job(store, ({"n": i} for i in range(3)), batch_size=10).job_id
    now[0] += 2 * DAY_MS
    with pytest.raises(InvalidInputError):
        store.purge_jobs(older_than_ms=0, statuses=bad)
    assert store.get_job_state(job_id) is not None


def test_purge_refuses_a_bad_age_or_status(clocked: tuple[AnyStore, list[int]]) -> None:
    store, _ = clocked
    with pytest.raises(InvalidValueError):
        store.purge_jobs(older_than_ms=-1)
    with pytest.raises(InvalidStatusError):
        store.purge_jobs(older_than_ms=0, statuses=["GONE"])


def test_purge_deletes_a_large_job_in_bounded_chunks(
    peewee_store: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batchactions_peewee.store.facade.PURGE_CHUNK", 7)
    now = [START_MS]  # moved by hand: the job is older than the cutoff, not of its millisecond
    store = PeeweeStateStore(
        peewee_store.database, table_prefix=peewee_store.table_prefix, clock=lambda: now[0]
    )
    job_id = prepare_job(store, ({"n": i} for i in range(50)), batch_size=5).job_id
    assert store.abort_job(job_id)
    now[0] += 1
    seen: list[str] = []
    database = store.database
    execute = database.execute_sql

    def counting(sql: str, params: object = None, *args: object, **kw: object) -> object:
        if sql.lstrip().upper().startswith("DELETE"):
            seen.append(sql)
        return execute(sql, params, *args, **kw)

    monkeypatch.setattr(database, "execute_sql", counting)
    assert store.purge_jobs(older_than_ms=0) == 1
    # 50 records and 10 batches, 7 at a time (a chunk short of 7 is the last); the job row.
    assert len(seen) == 8 + 2 + 1
    assert store.get_job_state(job_id) is None
