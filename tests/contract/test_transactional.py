"""A batch processor's writes and the batch's fenced completion in one transaction: what
``Worker(transactional=True)`` stands on, on every database backend."""

from __future__ import annotations

from collections.abc import Iterator

import peewee as pw
import pytest

from batchactions_peewee import BatchReservation, BatchStatus, PeeweeStateStore, prepare_job
from batchactions_peewee.ports import Completion


class Imported(pw.Model):
    """A user's table: no unique key, so a duplicate would be counted, not hidden."""

    n = pw.IntegerField()

    class Meta:
        table_name = "test_tx_imported"


@pytest.fixture
def imported(peewee_store: PeeweeStateStore) -> Iterator[type[Imported]]:
    with peewee_store.database.bind_ctx([Imported]):
        Imported.create_table()
        try:
            yield Imported
        finally:
            Imported.drop_table()


def _claimed(store: PeeweeStateStore) -> BatchReservation:
    job_id = prepare_job(store, ({"n": n} for n in range(4)), batch_size=4).job_id
    claim = store.claim_batch(job_id, "w1")
    assert claim.reservation is not None
    return claim.reservation


def _import(table: type[Imported], r: BatchReservation) -> Completion:
    table.insert_many([{"n": n} for n in range(r.record_start_index, 4)]).execute()
    done = [(n, {"n": n}, {"n": n}) for n in range(4)]
    return Completion(BatchStatus.COMPLETED, processed_count=4, failed_count=0, processed=done)


def test_the_processors_writes_and_the_completion_commit_together(
    peewee_store: PeeweeStateStore, imported: type[Imported]
) -> None:
    r = _claimed(peewee_store)
    assert peewee_store._complete_batch_in_transaction(r, lambda: _import(imported, r)) is True
    assert imported.select().count() == 4
    assert [x.status.value for x in peewee_store.get_batch_records(r.job_id, r.batch_id)] == [
        "processed"
    ] * 4
    assert peewee_store.get_distributed_status(r.job_id).completed_batches == 1


def test_a_completion_fenced_off_rolls_the_processors_writes_back(
    peewee_store: PeeweeStateStore, imported: type[Imported]
) -> None:
    r = _claimed(peewee_store)
    peewee_store.release_batch(r.job_id, r.batch_id, "w1")  # as a reclaim would
    assert peewee_store.claim_batch(r.job_id, "w2").claimed, "another worker took it"
    assert peewee_store._complete_batch_in_transaction(r, lambda: _import(imported, r)) is False
    assert imported.select().count() == 0, "the fenced-off batch's rows were rolled back"
    status = peewee_store.get_distributed_status(r.job_id)
    assert (status.processing_batches, status.completed_batches) == (1, 0)


def test_a_processor_that_raises_writes_nothing_and_keeps_the_batch(
    peewee_store: PeeweeStateStore, imported: type[Imported]
) -> None:
    r = _claimed(peewee_store)

    def half_then_fail() -> Completion:
        imported.insert_many([{"n": 1}, {"n": 2}]).execute()
        raise RuntimeError("the CRM is down")

    with pytest.raises(RuntimeError, match="the CRM is down"):
        peewee_store._complete_batch_in_transaction(r, half_then_fail)
    assert imported.select().count() == 0
    assert peewee_store.get_distributed_status(r.job_id).processing_batches == 1
    assert peewee_store.heartbeat(r), "the worker still holds the batch"
