"""Worker: claims a job's batches, validates and processes their records, and writes the
results with the store's fenced completion, so a worker whose lease was taken over cannot
overwrite the new owner.

Processing is at least once: a batch whose worker died is processed again from its first
record by the worker that reclaims it, so a processor with side effects should be idempotent;
a transactional batch processor's writes to the store's database are the exception (see
``batch_processor``): they commit once, with the batch's results.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pydantic

from ..checks import check_id
from ..errors import InvalidInputError, JobNotFoundError, StoreUnavailable
from ..logfields import log_fields
from ..model import (
    BatchReservation,
    ClaimFailureReason,
    JobStatus,
)
from ..ports import WorkerStore
from .batch import BatchWork, Processor, batch_done_event, process_records
from .batch_processor import (
    BatchProcessor,
    check_processors,
    transactional_io,
)
from .concurrency import InFlight, ProcessRecords, check_concurrency, is_async_processor
from .events import (
    BatchClaimed,
    BatchResult,
    EventHandler,
    JobCompleted,
    JobPaused,
    JobResumed,
    LeaseLost,
    StoreErrorOutlived,
    WorkerEvent,
    WorkerSummary,
)
from .hooks import JobHooks
from .io import worker_io
from .leases import Held, Leases
from .runs import (
    Limits,
    Tally,
    batch_result,
    elapsed_ms,
    first_line,
    store_error_pause,
)
from .worker_base import WorkerBase
from .write_behind import Ahead, WriteBehind

logger = logging.getLogger(__name__)


class Worker(WorkerBase):
    """Claims a job's batches one at a time, validates and processes their records, and
    writes the results, until no batch is left.

    ``processor(record, context)`` gets each record's parsed data (validated by ``schema``,
    a pydantic model class, when given) and a :class:`ProcessingContext`. An exception
    fails the record after ``max_retries`` retries, waiting ``retry_delay_ms * 2**(n-1)``
    before retry n. With ``continue_on_error=False`` the first failed (or invalid) record
    ends its batch as FAILED; its later records stay pending and the job ends FAILED.

    Instead of ``processor`` (exactly one of the two), ``batch_processor(records, context)
    -> Mapping[int, str] | None`` is called once per batch with its valid records, in index
    order, and a :class:`BatchContext`; it returns the failed records' indexes with their
    messages, or None when all were processed. An exception fails every record of the
    batch, after ``max_retries`` retries of the whole call. With ``transactional=True``
    (a ``PeeweeStateStore`` only) the call and the batch's fenced completion run in one
    transaction of the store's database: if the completion is refused (the batch was taken
    over), whatever the processor wrote through ``context.database`` is rolled back. The
    hooks run per record around a batch processor too: the three before hooks before the
    call (a record they refuse is not passed), ``after_process`` after it for each record
    it did not fail.

    The worker renews its lease from a background thread every ``lease_timeout_ms / 3``;
    batches whose lease is older than ``lease_timeout_ms`` are reclaimed by idle workers.
    ``hooks`` (a :class:`JobHooks`) are called around each record's validation and
    processing: ``before_validate``, ``after_validate``, ``before_process`` and
    ``after_process``; a hook that raises fails its record without retries.
    ``concurrency`` (default 1) is how many records of a batch may be in flight at once,
    for processors that wait on I/O: a plain function runs on a pool of that many threads,
    an ``async def`` processor (or an object whose ``__call__`` is one) as that many
    coroutines on one event loop, at 1 too; the pool or the loop lasts as long as ``run``.
    Counts, retries, hooks, events and stored records are those of one record at a time,
    in index order; no record starts once the lease is lost or, with
    ``continue_on_error=False``, once a record failed, and the records after the first
    failed one (by index) stay pending even if they ran. Above 1, ``run`` writes each
    batch on a writer thread while the next batch's records are in flight, one write at a
    time, all of them done before it returns, and claims the batch after it there
    (``write_behind.py``).
    ``on_event`` receives :class:`WorkerEvent` s; an exception it raises is logged and
    ignored. ``sleep`` (seconds) replaces the retry waits (processor retries and pauses
    after a store failure), for tests. Settings come from these arguments only, not from
    the job's config; ``store_error_limit`` and ``store_backoff_cap_s`` may be set on a
    subclass or an instance.
    """

    _logger = logger

    def __init__(
        self,
        store: WorkerStore,
        processor: Processor | None = None,
        *,
        batch_processor: BatchProcessor | None = None,
        transactional: bool = False,
        worker_id: str | None = None,
        schema: type[pydantic.BaseModel] | None = None,
        continue_on_error: bool = True,
        max_retries: int = 0,
        retry_delay_ms: int = 1000,
        lease_timeout_ms: int = 300_000,
        on_event: EventHandler | None = None,
        sleep: Callable[[float], object] | None = None,
        hooks: JobHooks | None = None,
        concurrency: int = 1,
    ) -> None:
        missing = [
            name
            for name in ("claim_batch", "get_batch_records", "heartbeat", "complete_batch")
            if not callable(getattr(store, name, None))
        ]
        if missing:
            raise InvalidInputError(f"the store lacks {', '.join(missing)}")
        check_processors(processor, batch_processor)
        if transactional_io(store, transactional) is not None and batch_processor is None:
            raise InvalidInputError("transactional=True is for a batch_processor")
        super().__init__(
            processor,
            has_batch_processor=batch_processor is not None,
            transactional=transactional,
            worker_id=worker_id,
            schema=schema,
            continue_on_error=continue_on_error,
            max_retries=max_retries,
            retry_delay_ms=retry_delay_ms,
            lease_timeout_ms=lease_timeout_ms,
            on_event=on_event,
            hooks=hooks,
            concurrency=concurrency,
        )
        if is_async_processor(batch_processor):
            raise InvalidInputError("batch_processor must be a plain function, not async def")
        self.store = store
        self.batch_processor = batch_processor
        self._sleep = sleep
        self._stopping = threading.Event()
        self._draining = threading.Event()
        self._leases = Leases(f"lease-{self.worker_id}")
        self._in_flight = InFlight(f"records-{self.worker_id}", sleep)
        self._behind = WriteBehind(f"writer-{self.worker_id}", self._emit)

    # -- public ---------------------------------------------------------------------------

    def run(
        self,
        job_id: str,
        *,
        max_batches: int | None = None,
        max_duration_ms: int | None = None,
    ) -> WorkerSummary:
        """Process batches of ``job_id`` until none is left, then finalize the job.

        When no batch is PENDING, stale batches (lease older than ``lease_timeout_ms``) are
        reclaimed and processed. While other workers still hold live batches the worker
        waits, polling, so that it can take over a batch whose worker dies; it returns once
        every batch is COMPLETED or FAILED, when the job is aborted, finished or not
        claimable (not prepared yet), once ``max_batches`` batches are done or
        ``max_duration_ms`` has passed (checked between batches), or after ``stop()``:
        ``WorkerSummary.stopped`` says which. While the job is PAUSED the worker waits,
        claiming nothing, and goes on within a poll interval of ``resume_job``. When the job
        is aborted, the batch in hand is given back before its next record (the abort is
        noticed at the next lease renewal at the latest). Raises JobNotFoundError for an
        unknown job. The job is finalized (exactly once, by ``try_finalize_job``) by the
        first worker whose claim finds no batch left once every batch is done, or as a run
        returns; a job whose last worker died in between stays PROCESSING until any worker
        runs it again.

        A database failure that the store's own retries could not cure (the server gone
        for longer than they last, say) does not end the run: the batch in hand is
        abandoned (released if the database answers, else its lease runs out and another
        worker reclaims it) and the worker tries again after a pause that grows, jittered,
        up to ``store_backoff_cap_s``. After ``store_error_limit`` failures in a row the
        next one is raised; ``WorkerSummary.store_errors`` counts those outlived. Errors
        of the query itself (constraint, syntax, data) are raised at once.
        """
        check_id(job_id, "job id")
        limits = Limits.of(max_batches, max_duration_ms)
        tally = Tally()
        in_a_row = 0
        try:
            while True:
                try:
                    if self._stopping.is_set():
                        tally.stopped = "stopped"
                    if self._stopping.is_set() or self._step(job_id, tally, limits):
                        self._settle(tally)
                        if tally.stopped != "aborted":
                            tally.finalized = self._finalize(job_id) or tally.finalized
                        break
                    in_a_row = 0
                except StoreUnavailable as exc:
                    tally.store_errors += 1
                    in_a_row += 1
                    stopping = self._stopping.is_set()
                    if not stopping and in_a_row > self.store_error_limit:
                        raise
                    self._emit(
                        StoreErrorOutlived(job_id, self.worker_id, first_line(exc), in_a_row)
                    )
                    if stopping:
                        logger.warning(
                            "store call failed while stopping (%s); stopped",
                            exc,
                            extra=log_fields(job_id, worker_id=self.worker_id),
                        )
                        break
                    self._pause_after_store_error(job_id, exc, in_a_row)
        finally:
            self._stopping.clear()
            self._draining.clear()
            self._behind.close(self.store, self._give_back)
            self._leases.close()
            self._in_flight.close()
        return tally.summary(job_id, self.worker_id)

    def _step(self, job_id: str, tally: Tally, limits: Limits) -> bool:
        """One round of ``run``: process a batch, or wait for other workers' batches or for
        a paused job; True once the job needs nothing more from this worker."""
        done = tally.batches + tally.leases_lost + self._behind.pending
        if limits.reached(done):
            tally.stopped = "limit"
            return True
        # Read the batch after this one ahead only if the limits leave room for it.
        result = self._next(job_id, report=False, ahead_ok=not limits.reached(done + 2))
        self._settle(tally, taken_only=True)
        if result is None:  # claimed, and being written behind
            return False
        tally.add(result)
        if result.aborted:
            return self._aborted(job_id, tally)
        if result.reason == ClaimFailureReason.JOB_NOT_PROCESSING:
            return self._not_processing(job_id, tally)
        if tally.paused:
            tally.paused = False
            self._emit(JobResumed(job_id, self.worker_id))
        if result.claimed:
            return False
        status = self.store.get_distributed_status(job_id)
        if status.pending_batches:
            return False
        if not status.processing_batches:
            return True
        # Other workers hold live batches: wait for them to finish or go stale.
        self._stopping.wait(self._poll_interval_s)
        return False

    def _settle(self, tally: Tally, *, taken_only: bool = False) -> None:
        """Count the batches written behind; unless ``taken_only``, wait for the one in
        hand first."""
        if not taken_only:
            self._behind.settle()
        for result in self._behind.take():
            tally.add(result)

    def _not_processing(self, job_id: str, tally: Tally) -> bool:
        # Claims answer JOB_NOT_PROCESSING for every status but PROCESSING: only a pause
        # is waited out.
        status = worker_io(self.store)._job_status(job_id)
        if status == JobStatus.ABORTED:
            return self._aborted(job_id, tally)
        if status != JobStatus.PAUSED:
            return True
        if not tally.paused:
            tally.paused = True
            logger.info(
                "job %s is paused; worker %s waits",
                job_id,
                self.worker_id,
                extra=log_fields(job_id, worker_id=self.worker_id),
            )
            self._emit(JobPaused(job_id, self.worker_id))
        self._stopping.wait(self._poll_interval_s)
        return False

    def _pause_after_store_error(self, job_id: str, exc: BaseException, in_a_row: int) -> None:
        delay = store_error_pause(in_a_row, self.store_backoff_cap_s)  # stop() ends it early
        logger.warning(
            "store call failed (%s: %s); batch in hand abandoned; trying again in %.2f s (%d/%d)",
            type(exc).__name__,
            first_line(exc),
            delay,
            in_a_row,
            self.store_error_limit,
            exc_info=logger.isEnabledFor(logging.DEBUG),
            extra=log_fields(job_id, worker_id=self.worker_id),
        )
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stopping.wait(delay)

    def process_next(self, job_id: str) -> BatchResult:
        """Claim one batch (reclaiming stale ones when none is PENDING), process it, write
        its results and try to finalize the job. Raises JobNotFoundError for an unknown job.
        """
        try:
            result = self._next(job_id, report=True)
            assert result is not None  # nothing is written behind with report
            return result
        finally:
            self._leases.close()
            self._in_flight.close()

    def _next(self, job_id: str, *, report: bool, ahead_ok: bool = False) -> BatchResult | None:
        """``process_next``; with ``report`` False (``run``'s rounds), a written batch is
        not followed by an attempt to finalize and ``job_complete`` is left False: ``run``
        reads the job's state only once no batch is left to claim, so a batch costs no
        reads beyond its own records. None when the batch is being written behind (with
        records in flight, in ``run``): its result comes from ``self._behind``, which may
        also have claimed and read this batch ahead (``ahead_ok``: and the next one)."""
        ahead = self._behind.take_ahead()
        if ahead is not None:
            return self._process_batch(ahead.lease.reservation, report, ahead, ahead_ok)
        claim = self.store.claim_batch(job_id, self.worker_id)
        if (
            claim.reason == ClaimFailureReason.NO_PENDING_BATCHES
            and self.store.reclaim_stale_batches(job_id, self.lease_timeout_ms)
        ):
            claim = self.store.claim_batch(job_id, self.worker_id)
        if claim.reservation is None:
            self._behind.settle()  # before the job's state is read, or it is finalized
            if claim.reason == ClaimFailureReason.JOB_NOT_FOUND:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            finalized = claim.reason == ClaimFailureReason.NO_PENDING_BATCHES and self._finalize(
                job_id
            )
            return BatchResult(
                claimed=False,
                job_id=job_id,
                job_complete=report and self._job_complete(job_id),
                finalized=finalized,
                reason=claim.reason,
            )
        return self._process_batch(claim.reservation, report, None, ahead_ok)

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in hand (safe from any thread)."""
        self._stopping.set()

    def drain(self) -> None:
        """Ask ``run`` to return after the record in hand, as on SIGTERM (safe from any
        thread): each batch held is given back (released, PENDING again for any worker)
        before its next record instead of finished; its records done so far are processed
        again, at least once, as after a crash. Records written behind are written first."""
        self._draining.set()
        self._stopping.set()
        self._leases.lose_all()

    # -- one batch ------------------------------------------------------------------------

    def _process_batch(
        self, res: BatchReservation, report: bool, ahead: Ahead | None, ahead_ok: bool
    ) -> BatchResult | None:
        started = time.monotonic()
        self._emit(BatchClaimed.of(res, self.worker_id))
        if self.batch_processor is not None:
            return self._outcome(res, self._whole_batch(res, self.batch_processor), report, started)
        lease: Held | None = None
        written = False
        behind = False
        try:
            try:
                lease = ahead.lease if ahead is not None else self._hold(res)
                records = ahead.records if ahead is not None else self._read_batch(res)
                if ahead_ok and self._writes_behind(report):
                    self._behind.read_ahead(functools.partial(self._claim_ahead, res.job_id))
                work = self._process_records()(
                    records,
                    res,
                    total=self._total(res.job_id),
                    lease_lost=lease.lost,
                    process=self._record_processing(),
                    continue_on_error=self.continue_on_error,
                    on_failed=self._emit_record_failed,
                )
            finally:
                if lease is not None:
                    self._leases.release(lease)
            self._behind.settle()  # the batch before, first: one write at a time
            if not work.lease_lost and self._writes_behind(report):
                self._behind.submit(
                    lambda: self._write(res, work),
                    lambda written: self._outcome(res, written, report, started),
                )
                behind = True
                return None
            if not work.lease_lost:
                written = self._complete(res, work)
                work.lease_lost = not written
        finally:
            if not written and not behind:
                self._release(res)
        return self._outcome(res, work, report, started)

    def _writes_behind(self, report: bool) -> bool:
        # In run (not process_next), with records in flight: see write_behind.py.
        return not report and self.concurrency > 1 and self.batch_processor is None

    def _hold(self, res: BatchReservation) -> Held:
        # The store and the interval as they are now: both are public attributes.
        return self._leases.hold(res, self.store, self.lease_timeout_ms / 3000)

    def _claim_ahead(self, job_id: str) -> Ahead | None:
        """The next batch, claimed, held and read on the writer thread; None when the
        claim finds none (the worker's own claim then reclaims stale batches)."""
        res = self.store.claim_batch(job_id, self.worker_id).reservation
        if res is None:
            return None
        lease = self._hold(res)
        try:
            return Ahead(lease, self._read_batch(res))
        except BaseException:
            self._give_back(Ahead(lease, []))
            raise

    def _give_back(self, ahead: Ahead) -> None:
        self._leases.release(ahead.lease)
        self._release(ahead.lease.reservation)

    def _write(self, res: BatchReservation, work: BatchWork) -> BatchWork:
        """The batch's write, behind (on the writer thread): given back unless written."""
        written = False
        try:
            written = self._complete(res, work)
            work.lease_lost = not written
        finally:
            if not written:
                self._release(res)
        return work

    def _outcome(
        self, res: BatchReservation, work: BatchWork, report: bool, started: float
    ) -> BatchResult:
        """The BatchResult (and events) of a batch processed, written or not."""
        if work.lease_lost and worker_io(self.store)._job_status(res.job_id) == JobStatus.ABORTED:
            # The renewal was refused because the job was aborted: the batch is given back.
            return batch_result(res, work, aborted=True)
        if work.lease_lost and self._draining.is_set():
            logger.info("gave batch %s back (stopping)", res.batch_id, extra=self._fields(res))
            return batch_result(res, work, given_back=True)
        if work.lease_lost:
            logger.warning(
                "lost the lease on batch %s; its results were not written",
                res.batch_id,
                extra=self._fields(res),
            )
            self._emit(LeaseLost(res.job_id, self.worker_id, res.batch_id, res.batch_index))
            complete = report and self._job_complete(res.job_id)
            return batch_result(res, work, lease_lost=True, job_complete=complete)
        self._emit(batch_done_event(res, self.worker_id, work, elapsed_ms(started)))
        finalized = complete = False
        if report:
            try:
                finalized = self._finalize(res.job_id)
                complete = finalized or self._job_complete(res.job_id)
            except StoreUnavailable as exc:
                # The batch is written and counts as this worker's; finalizing is left to
                # the next call (or to another worker).
                logger.warning(
                    "batch %s written; the job is not finalized yet: %s",
                    res.batch_id,
                    exc,
                    extra=self._fields(res),
                )
        return batch_result(
            res,
            work,
            processed_count=work.processed,
            failed_count=work.failed,
            job_complete=complete,
            finalized=finalized,
        )

    def _whole_batch(self, res: BatchReservation, batch_processor: BatchProcessor) -> BatchWork:
        """A batch processor's batch, processed and written under one lease (see
        ``batch_processor.BatchProcessing``); given back unless written."""
        lease = self._hold(res)
        work = BatchWork(lease_lost=True)
        try:
            work = self._batch_processing(batch_processor, self.store)(
                worker_io(self.store),
                res,
                self._read_batch(res),
                total=self._total(res.job_id),
                lease_lost=lease.lost,
                on_failed=self._emit_record_failed,
            )
        finally:
            self._leases.release(lease)
            if work.lease_lost:
                self._release(res)
        return work

    def _read_batch(self, res: BatchReservation) -> list[tuple[int, dict[str, Any]]]:
        """The batch's records as (index, raw) pairs: all that processing needs."""
        return worker_io(self.store)._get_batch_raw(res.job_id, res.batch_id)

    def _complete(self, res: BatchReservation, work: BatchWork) -> bool:
        return worker_io(self.store)._complete_batch_processed(res, **work.completion())

    def _process_records(self) -> ProcessRecords:
        # A plain function at concurrency 1: the one-by-one loop, no thread, no loop.
        asynchronous = is_async_processor(self.processor)
        if self.concurrency == 1 and not asynchronous:
            return process_records
        return self._in_flight.runner(check_concurrency(self.concurrency), asynchronous)

    def _wait(self, seconds: float, lease_lost: threading.Event) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            lease_lost.wait(seconds)  # wakes early when the lease is lost

    def _release(self, res: BatchReservation) -> None:
        # Hand the batch back at once (an exception escaped, or the write was refused);
        # acts only while this worker still holds it.
        try:
            worker_io(self.store)._release_reservation(res)
        except Exception:
            logger.exception("could not release batch %s", res.batch_id, extra=self._fields(res))

    # -- job level ------------------------------------------------------------------------

    def _total(self, job_id: str) -> int:
        total = self._total_records.get(job_id)
        if total is None:
            job = self.store.get_job_state(job_id)
            if job is None:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            total = self._total_records[job_id] = job.total_records
        return total

    def _job_complete(self, job_id: str) -> bool:
        status = self.store.get_distributed_status(job_id)
        if status.total_batches:
            return status.is_complete
        job = self.store.get_job_state(job_id)  # no batches: an empty source
        return job is not None and job.status == JobStatus.COMPLETED

    def _finalize(self, job_id: str) -> bool:
        if not self.store.try_finalize_job(job_id):
            return False
        self._log_finalized(job_id)
        if self.on_event is not None:
            try:
                status = worker_io(self.store)._job_status(job_id) or JobStatus.COMPLETED
                progress = self.store.get_progress(job_id)
            except Exception:
                logger.exception(
                    "job %s finalized, but its summary could not be read",
                    job_id,
                    extra=log_fields(job_id, worker_id=self.worker_id),
                )
            else:
                self._emit(JobCompleted.of(job_id, self.worker_id, status, progress))
        return True

    # -- events ---------------------------------------------------------------------------

    def _emit(self, event: WorkerEvent) -> None:
        # Events of a batch written behind wait for its write (write_behind.py).
        if self.on_event is not None and not self._behind.hold(event):
            super()._emit(event)
