"""pause_job, resume_job and abort_job on every backend: each one conditional UPDATE, True
only for the caller that moved the job, and what claims, leases and finalizing do after."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator

import pytest

from batchactions_peewee import (
    BatchStatus,
    ClaimFailureReason,
    JobStatus,
    PeeweeStateStore,
    prepare_job,
)
from batchactions_peewee.errors import JobAbortedError

from ..support.factories import job
from ..support.stores import Store


def status_of(store: Store, job_id: str) -> JobStatus:
    state = store.get_job_state(job_id)
    assert state is not None
    return JobStatus(state.status)


def test_pause_and_resume_move_a_processing_job_once_each(store: Store) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    assert store.pause_job(j.id) is True
    assert store.pause_job(j.id) is False, "a second pause moved nothing"
    assert status_of(store, j.id) == JobStatus.PAUSED
    claim = store.claim_batch(j.id, "w")
    assert claim.reason == ClaimFailureReason.JOB_NOT_PROCESSING
    assert store.resume_job(j.id) is True
    assert store.resume_job(j.id) is False
    assert status_of(store, j.id) == JobStatus.PROCESSING
    assert store.claim_batch(j.id, "w").claimed


def test_a_paused_job_whose_batches_are_all_done_is_not_finalized(store: Store) -> None:
    j = job(batches=1)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    assert store.pause_job(j.id)
    assert store.heartbeat(r), "a paused job's batch in hand keeps its lease"
    assert store.complete_batch(r, processed_count=2, failed_count=0)
    assert store.try_finalize_job(j.id) is False
    assert status_of(store, j.id) == JobStatus.PAUSED
    assert store.resume_job(j.id)
    assert store.try_finalize_job(j.id) is True
    assert status_of(store, j.id) == JobStatus.COMPLETED


@pytest.mark.parametrize("start", [JobStatus.CREATED, JobStatus.PROCESSING, JobStatus.PAUSED])
def test_abort_ends_a_created_processing_or_paused_job_for_good(
    store: Store, start: JobStatus
) -> None:
    j = job(batches=2, status=start)
    store.save_job_state(j)
    assert store.abort_job(j.id) is True
    assert store.abort_job(j.id) is False
    state = store.get_job_state(j.id)
    assert state is not None and state.status == JobStatus.ABORTED
    assert state.completed_at is not None
    assert store.resume_job(j.id) is False and store.pause_job(j.id) is False
    assert store.claim_batch(j.id, "w").reason == ClaimFailureReason.JOB_NOT_PROCESSING
    assert store.try_finalize_job(j.id) is False
    assert status_of(store, j.id) == JobStatus.ABORTED


@pytest.mark.parametrize("final", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED])
def test_nothing_moves_a_finished_job(store: Store, final: JobStatus) -> None:
    j = job(batches=1, status=final)
    store.save_job_state(j)
    assert (store.pause_job(j.id), store.resume_job(j.id), store.abort_job(j.id)) == (
        False,
        False,
        False,
    )
    assert status_of(store, j.id) == final


def test_controls_of_an_unknown_job_answer_false(store: Store) -> None:
    assert (store.pause_job("nope"), store.resume_job("nope"), store.abort_job("nope")) == (
        False,
        False,
        False,
    )
    assert store.get_job_state("nope") is None


def test_an_aborted_jobs_lease_is_not_renewed_but_its_batch_can_be_given_back(
    store: Store,
) -> None:
    j = job(batches=2)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    assert store.abort_job(j.id)
    assert store.heartbeat(r) is False, "the refused renewal is how workers learn of the abort"
    store.release_batch(j.id, r.batch_id, "w")
    batch = next(b for b in store.get_job_state(j.id).batches if b.id == r.batch_id)  # type: ignore[union-attr]
    assert (batch.status, batch.worker_id) == (BatchStatus.PENDING, None)


def test_abort_writes_the_job_rows_batch_list_as_the_batches_stand(
    peewee_store: PeeweeStateStore,
) -> None:
    """The TypeScript adapters read a job's batches from the job row's JSON list."""
    store = peewee_store
    j = job(batches=2)
    store.save_job_state(j)
    r = store.claim_batch(j.id, "w").reservation
    assert r is not None
    assert store.complete_batch(r, processed_count=2, failed_count=0)
    assert store.abort_job(j.id)
    J = store.tables.jobs
    listed = json.loads(J.select(J.batches).where(J.id == j.id).scalar())
    assert [b["status"] for b in listed] == ["COMPLETED", "PENDING"]


@pytest.mark.parametrize("control", ["pause_job", "abort_job"])
def test_of_many_concurrent_callers_exactly_one_moves_the_job(
    peewee_store: PeeweeStateStore, control: str
) -> None:
    j = job(batches=1)
    peewee_store.save_job_state(j)
    callers = 8
    start = threading.Barrier(callers)
    answers: list[bool] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            start.wait()
            answers.append(getattr(peewee_store, control)(j.id))
        except BaseException as exc:
            errors.append(exc)
        finally:
            peewee_store.database.close()  # this thread's connection

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert sorted(answers) == [False] * (callers - 1) + [True]


# -- an abort while prepare_job writes the job ----------------------------------------------


def _rows(
    count: int, on: int, act: Callable[[], object], taken: list[int]
) -> Iterator[dict[str, int]]:
    """``count`` records; ``act()`` runs before record ``on`` is handed out."""
    for index in range(count):
        if index == on:
            act()
        taken.append(index)
        yield {"n": index}


def test_an_abort_during_prepare_stays_final(store: Store) -> None:
    taken: list[int] = []
    rows = _rows(10, 9, lambda: store.abort_job("racing"), taken)
    with pytest.raises(JobAbortedError, match="aborted while it was being prepared"):
        prepare_job(store, rows, batch_size=4, job_id="racing")
    assert status_of(store, "racing") == JobStatus.ABORTED, "the final write did not undo it"
    assert store.claim_batch("racing", "w").reason == ClaimFailureReason.JOB_NOT_PROCESSING
    assert store.get_distributed_status("racing").total_batches == 0


def test_a_job_deleted_during_prepare_leaves_no_records(store: Store) -> None:
    taken: list[int] = []
    rows = _rows(10, 9, lambda: store.delete_job("racing"), taken)
    with pytest.raises(JobAbortedError, match="deleted while it was being prepared"):
        prepare_job(store, rows, batch_size=4, job_id="racing")
    assert store.get_job_state("racing") is None
    assert store.get_pending_records("racing") == []


def test_an_abort_stops_a_long_preparation_early(store: Store) -> None:
    taken: list[int] = []
    rows = _rows(1000, 3, lambda: store.abort_job("long"), taken)
    with pytest.raises(JobAbortedError):
        prepare_job(store, rows, batch_size=1, job_id="long")
    assert len(taken) < 100, f"read {len(taken)} of 1000 records after the abort"
    assert status_of(store, "long") == JobStatus.ABORTED
