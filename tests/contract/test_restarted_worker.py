"""A worker restarted under the same name (a pod that comes back as ``pod-a``): the lease
protocol fences by the reservation's version, not only by the holder's name, so the old
incarnation's reservation can neither renew nor complete the batch its successor holds."""

from __future__ import annotations

from ..support.factories import job, record
from ..support.stores import AnyStore, FakeClock
from .test_fencing import LEASE_MS, claim, clocked


def test_a_restarted_worker_of_the_same_name_fences_off_its_old_reservation(
    store: AnyStore,
) -> None:
    clock = FakeClock()
    store = clocked(store, clock)
    j = job(batches=1)
    store.save_job_state(j)
    old = claim(store, j.id, "pod-a")
    clock.advance(LEASE_MS + 1)  # pod-a died: its lease goes stale
    assert store.reclaim_stale_batches(j.id, LEASE_MS) == 1
    new = claim(store, j.id, "pod-a")  # ... and pod-a, restarted, claims it again
    assert (new.batch_id, new.worker_id) == (old.batch_id, old.worker_id)
    assert new.version > old.version

    assert not store.heartbeat(old), "the old incarnation's renewal is refused"
    done = [record(0, "processed"), record(1, "processed")]
    assert not store.complete_batch(old, processed_count=2, failed_count=0, records=done)
    assert store.get_distributed_status(j.id).processing_batches == 1, "still held by new"

    assert store.heartbeat(new)
    assert store.complete_batch(new, processed_count=2, failed_count=0, records=done)
    assert store.get_distributed_status(j.id).completed_batches == 1
