"""Concurrency inside a worker (``Worker(concurrency=N)``): up to N records of a batch in
flight at once, for processors that wait (a web API, a remote service).

A plain function runs on a thread pool of N threads, an ``async def`` processor on one
event loop in a thread of its own; the worker keeps either for all its batches and shuts
it down when ``run`` returns. Each batch is a ``BatchRun`` that N runners (pool threads,
or coroutines on the loop) share: each takes the next record in index order, processes
it, and hands its result back. Results are counted in index order as they come in, so
counts, errors, retries, events and the stored records are those of the one-by-one loop
(``batch.process_records``), which a plain function at concurrency 1 still runs.

When to stop: no record starts once the lease is lost (or the job aborted) or, without
``continue_on_error``, once a record has failed; the records in flight finish. The batch's
outcome is then what processing in index order gives: it ends at the first failed record
by index, and the records after it stay pending even if they ran (their results are
dropped); a lost lease writes nothing.
"""

from __future__ import annotations

import abc
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from ..errors import InvalidInputError
from ..model import BatchReservation, ProcessedRecord
from .batch import BatchWork, Done, RecordProcessing
from .events import ProcessingContext, batch_contexts

OnFailed = Callable[[BatchReservation, ProcessedRecord], None]
Result = Done | ProcessedRecord | None


def check_concurrency(value: object) -> int:
    """``concurrency`` must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"concurrency must be a positive integer, got {value!r}")
    return value


def is_async_processor(processor: object) -> bool:
    """Whether ``processor`` is an ``async def`` function, or an object whose ``__call__``
    is one."""
    return inspect.iscoroutinefunction(processor) or inspect.iscoroutinefunction(
        getattr(processor, "__call__", None)  # noqa: B004 - the method itself is inspected
    )


class ProcessRecords(Protocol):
    """``process_records``' signature, which every way of running a batch has."""

    def __call__(
        self,
        records: list[tuple[int, dict[str, Any]]],
        res: BatchReservation,
        *,
        total: int,
        lease_lost: threading.Event,
        process: RecordProcessing,
        continue_on_error: bool,
        on_failed: OnFailed,
    ) -> BatchWork: ...


class BatchRun:
    """One batch's records shared by the runners that process them: ``take`` hands out
    the next record in index order, ``put`` takes its result back and counts every result
    it can in index order (``BatchWork.add``, as the one-by-one loop does)."""

    def __init__(
        self,
        records: list[tuple[int, dict[str, Any]]],
        res: BatchReservation,
        *,
        total: int,
        lease_lost: threading.Event,
        continue_on_error: bool,
        on_failed: OnFailed,
    ) -> None:
        self.records = records
        self.res = res
        self.lease_lost = lease_lost
        self.continue_on_error = continue_on_error
        self.on_failed = on_failed
        self.work = BatchWork()
        self._context = batch_contexts(res.job_id, res.batch_id, res.batch_index, total, lease_lost)
        self.error: BaseException | None = None  # escaped the pipeline: raised at the end
        self._lock = threading.Lock()
        self._started = 0  # records handed out (by position)
        self._counted = 0  # records counted in work, in order
        self._results: dict[int, Done | ProcessedRecord] = {}  # by position, not counted yet
        self._stopped = False  # no record starts any more
        self._ended = False  # a failed record ended the batch: nothing after it counts

    def take(self) -> tuple[int, int, dict[str, Any], ProcessingContext] | None:
        """(position, index, raw, context) of the next record to start, or None once none
        may start."""
        with self._lock:
            if self._stopped or self._started == len(self.records):
                return None
            if self.lease_lost.is_set():
                self._stopped = self.work.lease_lost = True
                return None
            position = self._started
            self._started += 1
        index, raw = self.records[position]
        return position, index, raw, self._context(index)

    def put(self, position: int, result: Result) -> None:
        """The result of the record at ``position``; None: the lease was lost mid-retry."""
        with self._lock:
            if result is None:
                self._stopped = self.work.lease_lost = True
                return
            if isinstance(result, ProcessedRecord) and not self.continue_on_error:
                self._stopped = True
            self._results[position] = result
            while not self._ended and self._counted in self._results:
                result = self._results.pop(self._counted)
                self._counted += 1
                self._ended = self.work.add(
                    self.res, result, self.continue_on_error, self.on_failed
                )

    def fail(self, exc: BaseException) -> None:
        """An exception escaped the pipeline (not the processor's: those fail a record)."""
        with self._lock:
            self._stopped = True
            if self.error is None:
                self.error = exc

    def stop(self) -> None:
        with self._lock:
            self._stopped = True

    def outcome(self) -> BatchWork:
        """The batch's work once every runner has returned; raises what escaped."""
        if self.error is not None:
            raise self.error
        return self.work


class Runner(abc.ABC):
    """A way of running N records at once: ``process`` is a ``ProcessRecords``."""

    concurrency: int
    asynchronous: bool  # whether it runs an async def processor

    def process(
        self,
        records: list[tuple[int, dict[str, Any]]],
        res: BatchReservation,
        *,
        total: int,
        lease_lost: threading.Event,
        process: RecordProcessing,
        continue_on_error: bool,
        on_failed: OnFailed,
    ) -> BatchWork:
        batch = BatchRun(
            records,
            res,
            total=total,
            lease_lost=lease_lost,
            continue_on_error=continue_on_error,
            on_failed=on_failed,
        )
        try:
            if records:
                self._run(batch, process, min(self.concurrency, len(records)))
        except BaseException:
            batch.stop()  # interrupted while waiting: the runners start nothing more
            raise
        return batch.outcome()

    @abc.abstractmethod
    def _run(self, batch: BatchRun, process: RecordProcessing, runners: int) -> None:
        """Run ``runners`` runners over ``batch`` and return once all have returned."""

    @abc.abstractmethod
    def close(self) -> None:
        """Shut the pool or the loop down (after the records in flight)."""


class ThreadedRecords(Runner):
    """A plain function's records on a pool of ``concurrency`` threads, made with the
    first batch and kept until ``close``."""

    asynchronous = False

    def __init__(self, concurrency: int, name: str) -> None:
        self.concurrency = concurrency
        self._name = name
        self._pool: ThreadPoolExecutor | None = None

    def _run(self, batch: BatchRun, process: RecordProcessing, runners: int) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=self._name)
        for future in [self._pool.submit(_drain, batch, process) for _ in range(runners)]:
            future.result()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _drain(batch: BatchRun, process: RecordProcessing) -> None:
    """One pool thread's share of a batch: records until none may start."""
    while (taken := batch.take()) is not None:
        position, index, raw, context = taken
        try:
            result = process(index, raw, context)
        except BaseException as exc:
            batch.fail(exc)
            return
        batch.put(position, result)


class InFlight:
    """A worker's way of running records concurrently: at most one runner (a thread pool
    or an event loop), made when first needed, remade when the worker's settings change,
    and shut down by ``close`` (``run`` and ``process_next`` call it as they return)."""

    def __init__(self, name: str, sleep: Callable[[float], object] | None) -> None:
        self._name = name
        self._sleep = sleep
        self._runner: Runner | None = None

    def runner(self, concurrency: int, asynchronous: bool) -> ProcessRecords:
        current = self._runner
        if (
            current is None
            or current.asynchronous != asynchronous
            or current.concurrency != concurrency
        ):
            self.close()
            current = self._runner = self._new(concurrency, asynchronous)
        return current.process

    def _new(self, concurrency: int, asynchronous: bool) -> Runner:
        if not asynchronous:
            return ThreadedRecords(concurrency, f"{self._name}-thread")
        # asyncio is imported by a worker with an async processor only: it costs every
        # other worker process (each of a kill storm's too) about 30 ms at start.
        from .async_records import AsyncRecords

        return AsyncRecords(concurrency, f"{self._name}-loop", self._sleep)

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.close()
