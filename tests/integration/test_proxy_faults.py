"""Dropped connections, through a TCP proxy inside the test suite (tests/support/proxy.py).

The store talks to MariaDB / PostgreSQL through a proxy on 127.0.0.1 that the test tells to
cut every open connection (both ends get a reset), to refuse connections for a while, or
to deliver a COMMIT and then cut the connection before the answer comes back: the one
fault after which re-running a write blindly would be wrong. Each test prints how many
connections were cut (run with -s to see them).
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from batchactions_peewee import (
    BatchCompleted,
    BatchStatus,
    JobStatus,
    PeeweeStateStore,
    ProcessedRecord,
    ProcessingContext,
    RecordStatus,
    Worker,
    WorkerEvent,
    WorkerSummary,
    prepare_job,
)

from ..support.factories import job as make_job
from ..support.faults import assert_done_exactly_once
from ..support.proxy import FaultProxy
from ..support.stores import SERVER_KINDS, make_store

LEASE_MS = 2000


@dataclass
class Proxied:
    kind: str
    proxy: FaultProxy
    store: PeeweeStateStore  # every query goes through the proxy


@pytest.fixture(params=SERVER_KINDS)
def proxied(request: pytest.FixtureRequest, url_for: Callable[[str], str]) -> Iterator[Proxied]:
    parts = urllib.parse.urlsplit(url_for(request.param))
    assert parts.hostname is not None and parts.port is not None
    with FaultProxy(parts.hostname, parts.port) as proxy:
        netloc = parts.netloc.rsplit(":", 1)[0] + f":{proxy.port}"
        store, database = make_store(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
        try:
            yield Proxied(request.param, proxy, store)
        finally:
            proxy.come_up()
            database.close()  # this thread's connection may have been cut: start afresh
            store.drop_tables()
            database.close()


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def run_workers(
    store: PeeweeStateStore, job_id: str, count: int, on_event: Callable[[WorkerEvent], object]
) -> list[WorkerSummary]:
    """Run ``count`` Workers in threads (one connection each) until the job is done."""
    summaries: list[WorkerSummary] = []
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            worker = Worker(
                store, noop, worker_id=f"t{n}", lease_timeout_ms=LEASE_MS, on_event=on_event
            )
            summaries.append(worker.run(job_id))
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(summaries) == count
    return summaries


def every_nth_batch(n: int, action: Callable[[], object]) -> Callable[[WorkerEvent], None]:
    """An on_event handler that runs ``action`` after every ``n``-th completed batch."""
    done = [0]
    lock = threading.Lock()

    def on_event(event: WorkerEvent) -> None:
        if isinstance(event, BatchCompleted):
            with lock:
                done[0] += 1
                due = done[0] % n == 0
            if due:
                action()

    return on_event


def test_workers_finish_a_job_exactly_once_while_every_connection_is_cut_again_and_again(
    proxied: Proxied,
) -> None:
    store, proxy = proxied.store, proxied.proxy
    records, batch_size = 6000, 100
    job = prepare_job(store, ({"n": i} for i in range(records)), batch_size=batch_size)
    started = time.monotonic()
    # Cuts on command (after every 5th batch written) and at random moments in between.
    with proxy.cutting_randomly(0.05, 0.25, seed=11):
        summaries = run_workers(store, job.job_id, 3, every_nth_batch(5, proxy.cut_all))
    elapsed = time.monotonic() - started

    print(
        f"\n[proxy cuts {proxied.kind}] {records} records, 3 workers: {proxy.cut_rounds} cut "
        f"rounds, {proxy.cut} connections cut, {proxy.accepted} opened, store errors "
        f"outlived: {sum(s.store_errors for s in summaries)}, {elapsed:.1f} s"
    )
    assert proxy.cut_rounds >= 10
    assert_done_exactly_once(store, job.job_id, records)
    assert [s.finalized for s in summaries].count(True) == 1
    assert sum(s.batches for s in summaries) == job.total_batches
    assert sum(s.processed for s in summaries) == records


def test_workers_outlive_the_server_refusing_connections_longer_than_the_store_retries(
    proxied: Proxied,
) -> None:
    store, proxy = proxied.store, proxied.proxy
    # 4 s: every worker touches the store within about 1 s of the outage starting (a batch
    # takes milliseconds; an idle worker polls at least every second) and gives up after at
    # most 1.3 s of its own retries, so each meets an error it must outlive.
    records, batch_size, outage_s = 3000, 100, 4.0
    job = prepare_job(store, ({"n": i} for i in range(records)), batch_size=batch_size)
    outages: list[threading.Timer] = []

    def outage() -> None:
        if not outages:  # once, after the 10th batch
            proxy.go_down()
            outages.append(threading.Timer(outage_s, proxy.come_up))
            outages[0].start()

    started = time.monotonic()
    summaries = run_workers(store, job.job_id, 2, every_nth_batch(10, outage))
    elapsed = time.monotonic() - started
    outages[0].join()

    errors = sum(s.store_errors for s in summaries)
    print(
        f"\n[proxy outage {proxied.kind}] {outage_s} s without the server: store errors "
        f"outlived: {errors}, leases lost: {sum(s.leases_lost for s in summaries)}, "
        f"{elapsed:.1f} s"
    )
    assert errors >= 2  # both workers hit it, each at least once
    assert_done_exactly_once(store, job.job_id, records)
    assert [s.finalized for s in summaries].count(True) == 1


# -- a COMMIT that lands while its answer is lost ------------------------------------------


def processed(indexes: range) -> list[ProcessedRecord]:
    return [
        ProcessedRecord(index=i, raw={"n": i}, parsed={"n": i}, status=RecordStatus.PROCESSED)
        for i in indexes
    ]


def test_a_claim_whose_commit_answer_was_lost_is_recognised_not_made_twice(
    proxied: Proxied,
) -> None:
    store, proxy = proxied.store, proxied.proxy
    job = make_job(batches=3)
    store.save_job_state(job)
    proxy.lose_reply_to(b"COMMIT")
    result = store.claim_batch(job.id, "w1")
    if proxy.replies_lost == 0:
        pytest.skip("this claim path commits without a COMMIT statement")
    assert result.reservation is not None and result.reservation.batch_index == 0
    status = store.get_distributed_status(job.id)
    assert (status.processing_batches, status.pending_batches) == (1, 2)
    # The reservation is the real one: its fencing token lets it complete the batch.
    assert store.complete_batch(result.reservation, processed_count=0, failed_count=0)


def test_a_completion_whose_commit_answer_was_lost_reports_success_once(
    proxied: Proxied,
) -> None:
    store, proxy = proxied.store, proxied.proxy
    job = make_job(batches=1, per_batch=3)
    store.save_job_state(job)
    reservation = store.claim_batch(job.id, "w1").reservation
    assert reservation is not None
    proxy.lose_reply_to(b"COMMIT")
    written = store.complete_batch(
        reservation, processed_count=3, failed_count=0, records=processed(range(3))
    )
    assert proxy.replies_lost == 1
    assert written is True
    B = store.tables.batches
    version = B.select(B.version).where(B.id == reservation.batch_id).scalar()
    assert version == reservation.version + 1  # the completion applied once, not re-run
    assert [r.index for r in store.get_processed_records(job.id)] == [0, 1, 2]


def test_a_finalization_whose_commit_answer_was_lost_still_has_exactly_one_winner(
    proxied: Proxied,
) -> None:
    store, proxy = proxied.store, proxied.proxy
    job = make_job(batches=1)
    store.save_job_state(job)
    reservation = store.claim_batch(job.id, "w1").reservation
    assert reservation is not None
    store.complete_batch(reservation, status=BatchStatus.FAILED, processed_count=0, failed_count=2)
    proxy.lose_reply_to(b"COMMIT")
    assert store.try_finalize_job(job.id) is True
    assert proxy.replies_lost == 1
    assert store.try_finalize_job(job.id) is False
    state = store.get_job_state(job.id)
    assert state is not None and state.status == JobStatus.FAILED


def test_the_store_retries_a_connection_refused_for_a_moment(proxied: Proxied) -> None:
    store, proxy = proxied.store, proxied.proxy
    job = make_job(batches=1)
    store.save_job_state(job)
    proxy.go_down()
    back = threading.Timer(0.3, proxy.come_up)  # well inside the store's ~0.6-1.3 s of retries
    back.start()
    try:
        assert store.get_job_state(job.id) == job
    finally:
        back.join()
