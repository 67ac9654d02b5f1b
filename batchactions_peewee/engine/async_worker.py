"""AsyncWorker: the Worker's loop as a coroutine, inside the caller's event loop, over an
``AsyncPeeweeStateStore``.

The steps are the sync worker's own: a batch's records go through ``RecordProcessing`` (the
schema, hooks and retries) and are counted in index order by ``BatchRun``; a batch
processor runs through ``BatchProcessing``; the events, limits and results are those of
``worker``. What differs is where things run: an ``async def`` processor or batch processor
runs on the loop, up to ``concurrency`` records at once; a plain function runs in a thread
(``asyncio.to_thread``); the lease is renewed by a task of the loop. Unlike the rest of
the engine it knows its store's kind: it runs code on the store's greenlet bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import pydantic

from ..checks import check_id
from ..errors import InvalidInputError, JobNotFoundError, StoreUnavailable
from ..logfields import log_fields
from ..model import BatchReservation, ClaimFailureReason, JobStatus
from ..store.async_facade import AsyncPeeweeStateStore, await_
from .async_records import OneRecord, drain, process_async, sleep_unless, wait_for_retry
from .batch import BatchWork, Processor, batch_done_event
from .batch_processor import (
    BatchContext,
    BatchProcessor,
    check_processors,
)
from .concurrency import BatchRun, Result, is_async_processor
from .events import (
    BatchClaimed,
    BatchResult,
    EventHandler,
    JobCompleted,
    JobPaused,
    JobResumed,
    LeaseLost,
    ProcessingContext,
    StoreErrorOutlived,
    WorkerSummary,
)
from .hooks import JobHooks
from .runs import (
    Limits,
    Tally,
    batch_result,
    elapsed_ms,
    first_line,
    store_error_pause,
)
from .worker_base import WorkerBase

logger = logging.getLogger(__name__)

#: A batch processor of an AsyncWorker: a plain function, or an ``async def`` one.
AsyncBatchProcessor = (
    BatchProcessor
    | Callable[[list[dict[str, Any]], BatchContext], Awaitable[Mapping[int, str] | None]]
)


class AsyncWorker(WorkerBase):
    """The Worker of an ``AsyncPeeweeStateStore``: ``await worker.run(job_id)`` claims the
    job's batches, validates and processes their records and writes the results with the
    store's fenced completion, until no batch is left, inside the caller's event loop.

    The options are the Worker's (``processor`` or ``batch_processor``, ``transactional``,
    ``worker_id``, ``schema``, ``continue_on_error``, ``max_retries``, ``retry_delay_ms``,
    ``lease_timeout_ms``, ``on_event``, ``hooks``, ``concurrency``) with the same meaning.
    An ``async def`` processor runs on the loop, up to ``concurrency`` records of a batch
    at once; a plain function runs in a thread (``asyncio.to_thread``), as many at once.
    A batch processor may be either; with ``transactional=True`` it runs inside the
    store's transaction on the loop (a plain one then blocks the loop while it runs, and
    writes through ``context.database`` with pwasyncio's synchronous API). The lease is
    renewed by a task every ``lease_timeout_ms / 3``. ``stop()`` is honoured at the next
    record: the batch in hand is given back unwritten and ``run`` returns "stopped".
    """

    _logger = logger

    def __init__(
        self,
        store: AsyncPeeweeStateStore,
        processor: Processor | None = None,
        *,
        batch_processor: AsyncBatchProcessor | None = None,
        transactional: bool = False,
        worker_id: str | None = None,
        schema: type[pydantic.BaseModel] | None = None,
        continue_on_error: bool = True,
        max_retries: int = 0,
        retry_delay_ms: int = 1000,
        lease_timeout_ms: int = 300_000,
        on_event: EventHandler | None = None,
        hooks: JobHooks | None = None,
        concurrency: int = 1,
    ) -> None:
        if not isinstance(store, AsyncPeeweeStateStore):
            raise InvalidInputError(
                f"AsyncWorker needs an AsyncPeeweeStateStore, not {type(store).__name__}"
            )
        check_processors(processor, batch_processor)
        if not isinstance(transactional, bool):
            raise InvalidInputError(f"transactional must be True or False, got {transactional!r}")
        if transactional and batch_processor is None:
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
        self.store = store
        self.batch_processor = batch_processor
        self._stopping = threading.Event()
        self._halts: set[threading.Event] = set()  # the batches in hand: set to stop them
        #: The batch being written behind (``run``, records in flight): one at a time.
        self._writing: asyncio.Task[BatchResult] | None = None
        self._written: list[BatchResult] = []  # its result, for run's tally

    # -- public ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask ``run`` to return at the next record; the batch in hand is given back
        unwritten (safe from any thread)."""
        self._stopping.set()
        for halt in list(self._halts):
            halt.set()

    async def run(
        self,
        job_id: str,
        *,
        max_batches: int | None = None,
        max_duration_ms: int | None = None,
    ) -> WorkerSummary:
        """Process batches of ``job_id`` until none is left, then finalize the job: the
        Worker's ``run`` (stale batches reclaimed, paused jobs waited out, aborted jobs
        left, the limits checked between batches, store failures outlived up to
        ``store_error_limit`` in a row), as a coroutine."""
        check_id(job_id, "job id")
        limits = Limits.of(max_batches, max_duration_ms)
        tally = Tally()
        in_a_row = 0
        try:
            while True:
                try:
                    if self._stopping.is_set():
                        tally.stopped = "stopped"
                    if self._stopping.is_set() or await self._step(job_id, tally, limits):
                        await self._settle(tally)
                        if tally.stopped != "aborted":
                            tally.finalized = await self._finalize(job_id) or tally.finalized
                        break
                    in_a_row = 0
                except StoreUnavailable as exc:
                    tally.store_errors += 1
                    in_a_row += 1
                    if self._stopping.is_set():
                        break
                    if in_a_row > self.store_error_limit:
                        raise
                    delay = store_error_pause(in_a_row, self.store_backoff_cap_s)
                    logger.warning(
                        "store call failed (%s); trying again in %.2f s",
                        exc,
                        delay,
                        extra=log_fields(job_id, worker_id=self.worker_id),
                    )
                    self._emit(
                        StoreErrorOutlived(job_id, self.worker_id, first_line(exc), in_a_row)
                    )
                    await self._pause(delay)
        finally:
            self._stopping.clear()
            if self._writing is not None:  # an error ended the run: the write still lands
                with contextlib.suppress(Exception):
                    await self._settle(tally)
        return tally.summary(job_id, self.worker_id)

    async def process_next(self, job_id: str) -> BatchResult:
        """Claim one batch (reclaiming stale ones when none is PENDING), process it, write
        its results and try to finalize the job."""
        check_id(job_id, "job id")
        result = await self._next(job_id, report=True)
        assert result is not None  # nothing is written behind with report
        return result

    # -- the loop -------------------------------------------------------------------------

    async def _step(self, job_id: str, tally: Tally, limits: Limits) -> bool:
        """One round of ``run``; True once the job needs nothing more from this worker."""
        if limits.reached(tally.batches + tally.leases_lost + (self._writing is not None)):
            tally.stopped = "limit"
            return True
        result = await self._next(job_id, report=False)
        await self._settle(tally, wait=False)
        if result is None:  # being written behind
            return False
        if self._stopping.is_set() and result.lease_lost:
            return False  # stop() gave the batch in hand back: run says "stopped"
        tally.add(result)
        if result.aborted:
            return self._aborted(job_id, tally)
        if result.reason == ClaimFailureReason.JOB_NOT_PROCESSING:
            job_status = await self.store._job_status(job_id)
            if job_status == JobStatus.ABORTED:
                return self._aborted(job_id, tally)
            if job_status != JobStatus.PAUSED:
                return True
            if not tally.paused:
                tally.paused = True
                self._emit(JobPaused(job_id, self.worker_id))
            await self._pause(self._poll_interval_s)
            return False
        if tally.paused:
            tally.paused = False
            self._emit(JobResumed(job_id, self.worker_id))
        if result.claimed:
            return False
        status = await self.store.get_distributed_status(job_id)
        if status.pending_batches:
            return False
        if not status.processing_batches:
            return True
        await self._pause(self._poll_interval_s)  # others hold live batches: wait for them
        return False

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less once ``stop()`` is called."""
        await sleep_unless(self._stopping, seconds)

    async def _settle(self, tally: Tally | None = None, *, wait: bool = True) -> None:
        """Count the batch written behind into ``tally``; unless not ``wait``, wait for
        the one being written first."""
        task = self._writing
        if task is not None and (wait or task.done()):
            self._writing = None
            self._written.append(await task)
        if tally is not None:
            for result in self._written:
                tally.add(result)
            self._written.clear()

    async def _next(self, job_id: str, *, report: bool) -> BatchResult | None:
        store = self.store
        claim = await store.claim_batch(job_id, self.worker_id)
        if claim.reason == ClaimFailureReason.NO_PENDING_BATCHES and (
            await store.reclaim_stale_batches(job_id, self.lease_timeout_ms)
        ):
            claim = await store.claim_batch(job_id, self.worker_id)
        if claim.reservation is None:
            await self._settle()  # before the job's state is read, or it is finalized
            if claim.reason == ClaimFailureReason.JOB_NOT_FOUND:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            finalized = claim.reason == ClaimFailureReason.NO_PENDING_BATCHES and (
                await self._finalize(job_id)
            )
            return BatchResult(
                claimed=False,
                job_id=job_id,
                job_complete=report and await self._job_complete(job_id),
                finalized=finalized,
                reason=claim.reason,
            )
        return await self._process_batch(claim.reservation, report)

    # -- one batch ------------------------------------------------------------------------

    async def _process_batch(self, res: BatchReservation, report: bool) -> BatchResult | None:
        """The batch processed and written; None when its write was handed to a task
        (``run`` with records in flight): the next batch's records are then in flight
        while it is written, and its result comes through ``_settle``."""
        started = time.monotonic()
        self._emit(BatchClaimed.of(res, self.worker_id))
        halt = threading.Event()  # set when the lease is lost, or by stop()
        self._halts.add(halt)
        if self._stopping.is_set():
            halt.set()
        renewal = asyncio.create_task(self._renew(res, halt))
        work = BatchWork(lease_lost=True)
        handed_off = False
        try:
            total = await self._total(res.job_id)
            records = await self.store._get_batch_raw(res.job_id, res.batch_id)
            if self.batch_processor is not None:
                work = await self._whole_batch(res, records, total, halt)
            else:
                work = await self._records(res, records, total, halt)
                if not work.lease_lost and not report and self.concurrency > 1:
                    await self._settle()  # the batch before, first: one write at a time
                    finish = self._finish(res, work, report, started, renewal, halt)
                    self._writing = asyncio.create_task(finish)
                    handed_off = True
                    return None
                if not work.lease_lost:
                    await self._write(res, work)
        finally:
            if not handed_off:
                await self._end_lease(res, work, renewal, halt)
        return await self._outcome(res, work, report, started)

    async def _write(self, res: BatchReservation, work: BatchWork) -> None:
        """The batch's fenced completion; ``work.lease_lost`` unless it was written."""
        work.lease_lost = True  # until written: given back otherwise
        written = await self.store._complete_batch_processed(res, **work.completion())
        work.lease_lost = not written

    async def _finish(
        self,
        res: BatchReservation,
        work: BatchWork,
        report: bool,
        started: float,
        renewal: asyncio.Task[None],
        halt: threading.Event,
    ) -> BatchResult:
        """A batch written behind: its write, its lease's end, its result."""
        try:
            await self._write(res, work)
        finally:
            await self._end_lease(res, work, renewal, halt)
        return await self._outcome(res, work, report, started)

    async def _end_lease(
        self,
        res: BatchReservation,
        work: BatchWork,
        renewal: asyncio.Task[None],
        halt: threading.Event,
    ) -> None:
        """No more renewals; the batch given back unless it was written."""
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewal
        self._halts.discard(halt)
        if work.lease_lost:
            await self._release(res)

    async def _renew(self, res: BatchReservation, halt: threading.Event) -> None:
        """The lease's renewals, every ``lease_timeout_ms / 3``; ``halt`` is set once one
        is refused (the batch was reclaimed, or the job aborted)."""
        interval = self.lease_timeout_ms / 3000
        while not halt.is_set():
            await asyncio.sleep(interval)
            try:
                held = await self.store.heartbeat(res)
            except StoreUnavailable as exc:
                logger.warning(
                    "could not renew the lease on batch %s: %s",
                    res.batch_id,
                    exc,
                    extra=self._fields(res),
                )
                continue
            if not held:
                halt.set()

    async def _records(
        self,
        res: BatchReservation,
        records: list[tuple[int, dict[str, Any]]],
        total: int,
        halt: threading.Event,
    ) -> BatchWork:
        """The batch's records, up to ``concurrency`` at once, counted in index order."""
        batch = BatchRun(
            records,
            res,
            total=total,
            lease_lost=halt,
            continue_on_error=self.continue_on_error,
            on_failed=self._emit_record_failed,
        )
        process = self._record_processing()
        one: OneRecord
        if is_async_processor(self.processor):

            async def one(index: int, raw: dict[str, Any], context: ProcessingContext) -> Result:
                return await process_async(process, index, raw, context, wait_for_retry)
        else:

            async def one(index: int, raw: dict[str, Any], context: ProcessingContext) -> Result:
                return await asyncio.to_thread(process, index, raw, context)

        try:
            runners = min(self.concurrency, len(records))
            await asyncio.gather(*(drain(batch, one) for _ in range(runners)))
        except BaseException:
            batch.stop()
            raise
        return batch.outcome()

    async def _whole_batch(
        self,
        res: BatchReservation,
        records: list[tuple[int, dict[str, Any]]],
        total: int,
        halt: threading.Event,
    ) -> BatchWork:
        """A batch processor's batch through ``BatchProcessing``, which also writes it,
        run on the store's bridge: its queries, waits and the processor's call yield to
        the loop (a plain processor runs in a thread unless it joins the transaction)."""
        assert self.batch_processor is not None
        batch_processor = self.batch_processor

        def call(records: list[dict[str, Any]], context: Any) -> Any:
            if is_async_processor(batch_processor):
                return await_(batch_processor(records, context))
            if self.transactional:  # its writes belong to the store's transaction, here
                return batch_processor(records, context)
            return await_(asyncio.to_thread(batch_processor, records, context))

        def run(sync_store: Any) -> BatchWork:
            processing = self._batch_processing(call, sync_store, _bridged_wait)
            return processing(
                sync_store,
                res,
                records,
                total=total,
                lease_lost=halt,
                on_failed=self._emit_record_failed,
            )

        return await self.store.run(run)

    async def _release(self, res: BatchReservation) -> None:
        try:
            await self.store._release_reservation(res)
        except Exception:
            logger.exception("could not release batch %s", res.batch_id, extra=self._fields(res))

    async def _outcome(
        self, res: BatchReservation, work: BatchWork, report: bool, started: float
    ) -> BatchResult:
        if work.lease_lost and self._stopping.is_set():
            return batch_result(res, work, given_back=True)  # stop(): the run ends
        if work.lease_lost and await self.store._job_status(res.job_id) == JobStatus.ABORTED:
            return batch_result(res, work, aborted=True)
        if work.lease_lost:
            logger.warning(
                "lost the lease on batch %s; its results were not written",
                res.batch_id,
                extra=self._fields(res),
            )
            self._emit(LeaseLost(res.job_id, self.worker_id, res.batch_id, res.batch_index))
            complete = report and await self._job_complete(res.job_id)
            return batch_result(res, work, lease_lost=True, job_complete=complete)
        self._emit(batch_done_event(res, self.worker_id, work, elapsed_ms(started)))
        finalized = complete = False
        if report:
            finalized = await self._finalize(res.job_id)
            complete = finalized or await self._job_complete(res.job_id)
        return batch_result(
            res,
            work,
            processed_count=work.processed,
            failed_count=work.failed,
            job_complete=complete,
            finalized=finalized,
        )

    # -- job level ------------------------------------------------------------------------

    async def _total(self, job_id: str) -> int:
        total = self._total_records.get(job_id)
        if total is None:
            job = await self.store.get_job_state(job_id)
            if job is None:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            total = self._total_records[job_id] = job.total_records
        return total

    async def _job_complete(self, job_id: str) -> bool:
        status = await self.store.get_distributed_status(job_id)
        if status.total_batches:
            return status.is_complete
        job = await self.store.get_job_state(job_id)
        return job is not None and job.status == JobStatus.COMPLETED

    async def _finalize(self, job_id: str) -> bool:
        if not await self.store.try_finalize_job(job_id):
            return False
        self._log_finalized(job_id)
        if self.on_event is not None:
            try:
                status = await self.store._job_status(job_id) or JobStatus.COMPLETED
                progress = await self.store.get_progress(job_id)
            except Exception:
                logger.exception(
                    "job %s finalized, but its summary could not be read",
                    job_id,
                    extra=log_fields(job_id, worker_id=self.worker_id),
                )
            else:
                self._emit(JobCompleted.of(job_id, self.worker_id, status, progress))
        return True


def _bridged_wait(seconds: float, lease_lost: threading.Event) -> None:
    """A batch processor's wait before a retry, on the store's bridge: the loop runs on."""

    await_(sleep_unless(lease_lost, seconds))
