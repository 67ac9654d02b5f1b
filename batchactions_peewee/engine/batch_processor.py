"""Batch processors: one call per batch, with the batch's valid records, instead of one
call per record; with ``transactional``, that call and the batch's fenced completion run
in one transaction of the store's database, so what the processor writes there commits
exactly once, with the batch's results.

A batch goes through three steps. First each record goes through the steps before a
processor, as for a record processor: validation against the schema and the
``before_validate``, ``after_validate`` and ``before_process`` hooks; a record they refuse
is stored invalid (or failed, for a hook). Then the batch processor is called once with
what the valid records hand on, in index order, and retried as a whole when it raises.
Last, ``after_process`` runs for each record it did not fail, and the batch is written.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pydantic

from ..errors import InvalidInputError, StoreUnavailable
from ..logfields import log_fields
from ..model import (
    BatchReservation,
    Processed,
    ProcessedRecord,
    RecordStatus,
    trusted_record,
)
from ..ports import Completion, TransactionalIO, WorkerIO
from .batch import BatchWork, RecordProcessing, failed_record
from .events import ProcessingContext
from .hooks import HookedRecordProcessing, JobHooks, record_processing
from .validation import utf8_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchContext:
    """Where the records given to a batch processor sit in their job.

    ``record_indexes`` are the indexes of the records passed, in the same order;
    ``database`` is the Peewee database of a ``PeeweeStateStore`` (None for any other
    store): with ``Worker(transactional=True)``, what the processor writes through it
    commits together with the batch's completion, or not at all. ``lease_lost`` is set
    once the worker knows another worker may own the batch, as in ProcessingContext.
    """

    job_id: str
    batch_id: str
    batch_index: int
    record_indexes: tuple[int, ...]
    worker_id: str
    database: Any = None
    lease_lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


#: ``batch_processor(records, context) -> Mapping[int, str] | None``: the failed records'
#: indexes with their messages, or None when every record was processed.
BatchProcessor = Callable[[list[dict[str, Any]], BatchContext], "Mapping[int, str] | None"]

#: A record that passed the steps before the processor: (index, raw, parsed, what the
#: processor gets, its context).
_Ready = tuple[int, dict[str, Any], dict[str, Any], dict[str, Any], ProcessingContext]
#: A record once the processor answered: (index, raw, parsed) if processed without
#: retries, else its ProcessedRecord.
Settled = ProcessedRecord | Processed
OnFailed = Callable[[BatchReservation, ProcessedRecord], None]
_FAILED = (RecordStatus.FAILED, RecordStatus.INVALID)


class BadAnswer(Exception):
    """A batch processor's answer that is neither None nor a mapping of the indexes of
    its records to messages: every record fails with this message, without retries."""


def check_processors(processor: object, batch_processor: object) -> None:
    """Exactly one of ``processor`` and ``batch_processor``, and callable."""
    if (processor is None) == (batch_processor is None):
        raise InvalidInputError(
            "a Worker needs exactly one of processor (called per record) and "
            "batch_processor (called per batch)"
        )
    for name, value in (("processor", processor), ("batch_processor", batch_processor)):
        if value is not None and not callable(value):
            raise InvalidInputError(f"{name} must be callable, got {value!r}")


def transactional_io(store: object, transactional: object) -> TransactionalIO | None:
    """The store whose transaction a batch processor joins, or None without
    ``transactional``; InvalidInputError for a store that offers none (any store but a
    ``PeeweeStateStore`` that keeps our completion)."""
    if not isinstance(transactional, bool):
        raise InvalidInputError(f"transactional must be True or False, got {transactional!r}")
    if not transactional:
        return None
    own = getattr(store, "_worker_io", None)
    joins = callable(getattr(store, "_complete_batch_in_transaction", None))
    if not (joins and callable(own) and own() is store):
        raise InvalidInputError(
            "transactional=True needs a PeeweeStateStore (whose completion the batch "
            "processor's transaction includes), not " + type(store).__name__
        )
    return cast(TransactionalIO, store)


def store_database(store: object) -> Any:
    """``BatchContext.database``: a PeeweeStateStore's database, else None."""
    if callable(getattr(store, "_complete_batch_in_transaction", None)):
        return getattr(store, "database", None)
    return None


def no_record_processor(record: dict[str, Any], context: ProcessingContext) -> object:
    """The record processor of a worker with a batch processor: never called."""
    raise AssertionError("a worker with a batch processor calls no record processor")


@dataclass(frozen=True)
class BatchProcessing:
    """How a worker processes and writes one batch with a batch processor."""

    processor: BatchProcessor
    steps: RecordProcessing  # the steps before and after a processor, and the retries
    continue_on_error: bool
    worker_id: str
    database: Any
    transactional: TransactionalIO | None

    @staticmethod
    def of(
        processor: BatchProcessor,
        *,
        schema: type[pydantic.BaseModel] | None,
        hooks: JobHooks | None,
        max_retries: int,
        retry_delay_ms: int,
        wait: Callable[[float, threading.Event], None],
        continue_on_error: bool,
        worker_id: str,
        store: object,
        transactional: bool,
    ) -> BatchProcessing:
        """The batch processing of a worker with these settings."""
        # The records' steps but the call: validation, hooks and retries.
        steps = record_processing(
            no_record_processor, schema, max_retries, retry_delay_ms, wait, hooks
        )
        return BatchProcessing(
            processor,
            steps,
            continue_on_error,
            worker_id,
            store_database(store),
            transactional_io(store, transactional),
        )

    def __call__(
        self,
        io: WorkerIO,
        res: BatchReservation,
        records: list[tuple[int, dict[str, Any]]],
        *,
        total: int,
        lease_lost: threading.Event,
        on_failed: OnFailed,
    ) -> BatchWork:
        """Process the batch's (index, raw) records and write the batch. ``lease_lost`` is
        set in the result when nothing was written: the lease was lost first, or the
        fenced completion was refused (another worker may own the batch)."""
        work = BatchWork()
        ready = self._prepare(res, records, total, lease_lost, work, on_failed)
        if lease_lost.is_set():  # an aborted job's worker stops before the processor
            work.lease_lost = True
            return work
        if not ready:  # nothing valid to give the processor: the batch is written as it is
            return self._write(io, res, work, [], 0, on_failed)
        context = BatchContext(
            res.job_id,
            res.batch_id,
            res.batch_index,
            tuple(r[0] for r in ready),
            self.worker_id,
            self.database,
            lease_lost,
        )
        if self.transactional is not None:
            return self._in_transaction(
                self.transactional, io, res, work, ready, context, on_failed
            )
        attempt = 0
        while True:
            try:
                failures = self._call(ready, context)
            except Exception as exc:
                if attempt < self.steps.max_retries and not isinstance(exc, BadAnswer):
                    attempt += 1
                    if self._wait_to_retry(attempt, exc, lease_lost):
                        continue
                    work.lease_lost = True
                    return work
                return self._write(
                    io, res, work, self._failed(ready, exc, attempt), attempt, on_failed
                )
            settled = self._settled(ready, failures, attempt)
            return self._write(io, res, work, settled, attempt, on_failed)

    def _in_transaction(
        self,
        tx: TransactionalIO,
        io: WorkerIO,
        res: BatchReservation,
        work: BatchWork,
        ready: list[_Ready],
        context: BatchContext,
        on_failed: OnFailed,
    ) -> BatchWork:
        """The processor and the completion in one transaction, retried in a new one
        after the processor raised; once the retries are spent, the batch is written
        with every record failed. Failures are reported once the transaction committed."""
        attempt = 0
        while True:
            produced: list[tuple[BatchWork, list[Settled]]] = []
            produce = functools.partial(self._produce, work, ready, context, attempt, produced)
            try:
                written = tx._complete_batch_in_transaction(res, produce)
            except StoreUnavailable:
                raise  # the database, not the processor: the worker abandons the batch
            except Exception as exc:
                if attempt < self.steps.max_retries and not isinstance(exc, BadAnswer):
                    attempt += 1
                    if self._wait_to_retry(attempt, exc, context.lease_lost):
                        continue
                    work.lease_lost = True
                    return work
                return self._write(
                    io, res, work, self._failed(ready, exc, attempt), attempt, on_failed
                )
            if not written:  # fenced off: everything the processor wrote was rolled back
                work.lease_lost = True
                return work
            done, settled = produced[-1]
            _report(res, settled, on_failed)
            return done

    def _produce(
        self,
        work: BatchWork,
        ready: list[_Ready],
        context: BatchContext,
        attempt: int,
        produced: list[tuple[BatchWork, list[Settled]]],
    ) -> Completion:
        """One run of the processor inside the store's transaction, and the completion
        it makes (the store may run it again after a transient error)."""
        settled = self._settled(ready, self._call(ready, context), attempt)
        done = self._with(work, settled, attempt)
        produced.append((done, settled))
        return Completion(done.status, done.processed, done.failed, done.done, done.records)

    # -- the steps ------------------------------------------------------------------------

    def _prepare(
        self,
        res: BatchReservation,
        records: list[tuple[int, dict[str, Any]]],
        total: int,
        lease_lost: threading.Event,
        work: BatchWork,
        on_failed: OnFailed,
    ) -> list[_Ready]:
        """The records that passed the steps before the processor; the others go to
        ``work`` (and, without ``continue_on_error``, the first of them ends the batch
        there: the records after it stay pending)."""
        hooked = isinstance(self.steps, HookedRecordProcessing)
        job_id, batch_id, batch_index = res.job_id, res.batch_id, res.batch_index
        shared = ProcessingContext(job_id, batch_id, batch_index, -1, total, lease_lost)
        ready: list[_Ready] = []
        for index, raw in records:
            context = (
                ProcessingContext(job_id, batch_id, batch_index, index, total, lease_lost)
                if hooked
                else shared  # no hook sees it
            )
            outcome = self.steps.prepare(index, raw, context)
            if isinstance(outcome, ProcessedRecord):
                work.records.append(outcome)
                work.failed += 1
                on_failed(res, outcome)
                if not self.continue_on_error:
                    work.failure = outcome
                    break
                continue
            ready.append((index, raw, outcome[0], outcome[1], context))
        return ready

    def _call(self, ready: list[_Ready], context: BatchContext) -> dict[int, str]:
        """One call of the batch processor: the failed records' messages by index."""
        answer = self.processor([r[3] for r in ready], context)
        return _failures(answer, context.record_indexes)

    def _wait_to_retry(self, attempt: int, exc: Exception, lease_lost: threading.Event) -> bool:
        """Wait before retry ``attempt`` (exponential backoff); False once the lease is lost."""
        logger.debug("batch processor failed (%s); retry %d", exc, attempt)
        self.steps.wait(self.steps.retry_delay_ms * 2 ** (attempt - 1) / 1000, lease_lost)
        return not lease_lost.is_set()

    def _settled(
        self, ready: list[_Ready], failures: Mapping[int, str], retries: int
    ) -> list[Settled]:
        """Each record's outcome once the processor answered: failed with its message,
        failed by ``after_process``, or processed (as (index, raw, parsed) when it was
        not retried)."""
        settled: list[Settled] = []
        for index, raw, parsed, given, context in ready:
            message = failures.get(index)
            if message is not None:
                settled.append(_failed_with(index, raw, parsed, message, retries))
                continue
            after = self.steps.finish(
                index, raw, (parsed, given), (index, raw, parsed, retries), context
            )
            if isinstance(after, ProcessedRecord):  # failed by after_process
                settled.append(after)
                continue
            # Copied, as a record processor's are: a processor that keeps the dict and
            # changes it later cannot change what is stored.
            kept = dict(raw)
            done = kept if parsed is raw else parsed
            if retries:
                settled.append(
                    trusted_record(index, kept, done, RecordStatus.PROCESSED, None, retries)
                )
            else:
                settled.append((index, kept, done))
        return settled

    def _failed(self, ready: list[_Ready], exc: Exception, retries: int) -> list[Settled]:
        """Every record failed by ``exc``: the processor raised after its last retry, or
        answered what it may not (not retried)."""
        if isinstance(exc, BadAnswer):
            context = ready[0][4] if ready else None
            logger.error(
                "%s; every record of the batch fails",
                exc,
                extra=log_fields(context.job_id, context.batch_id) if context else log_fields(),
            )
        return [failed_record(r[0], r[1], r[2], exc, retries) for r in ready]

    def _with(self, work: BatchWork, settled: list[Settled], retries: int) -> BatchWork:
        """``work`` (the records refused before the processor) with the settled ones; the
        first failure fails the batch without ``continue_on_error``."""
        done = dataclasses.replace(work, done=list(work.done), records=list(work.records))
        for item in settled:
            if isinstance(item, tuple):
                done.done.append(item)
                done.processed += 1
                continue
            done.records.append(item)
            if item.status == RecordStatus.PROCESSED:
                done.processed += 1
            else:
                done.failed += 1
        done.records.sort(key=lambda record: record.index)
        done.retries = retries
        if not self.continue_on_error:
            done.failure = next((r for r in done.records if r.status in _FAILED), None)
        return done

    # -- writing --------------------------------------------------------------------------

    def _write(
        self,
        io: WorkerIO,
        res: BatchReservation,
        work: BatchWork,
        settled: list[Settled],
        retries: int,
        on_failed: OnFailed,
    ) -> BatchWork:
        """The batch written by the fenced completion, outside any transaction of ours;
        its failed records are reported first, as a record processor's are."""
        done = self._with(work, settled, retries)
        _report(res, settled, on_failed)
        written = io._complete_batch_processed(res, **done.completion())
        done.lease_lost = not written
        return done


def _report(res: BatchReservation, settled: list[Settled], on_failed: OnFailed) -> None:
    """RecordFailed of each record the processor (or after_process) failed."""
    for item in settled:
        if isinstance(item, ProcessedRecord) and item.status == RecordStatus.FAILED:
            on_failed(res, item)


def _failed_with(
    index: int, raw: dict[str, Any], parsed: dict[str, Any], message: str, retries: int
) -> ProcessedRecord:
    """A record the batch processor failed with ``message``."""
    return ProcessedRecord(
        index=index,
        raw=raw,
        parsed=parsed,
        status=RecordStatus.FAILED,
        processing_error=utf8_text(message or "failed by the batch processor"),
        retry_count=retries,
    )


def _failures(answer: object, indexes: tuple[int, ...]) -> dict[int, str]:
    """The batch processor's answer as {record index: message}; BadAnswer if it is not
    None or such a mapping over the batch's records."""
    if answer is None:
        return {}
    if not isinstance(answer, Mapping):
        raise BadAnswer(
            f"batch_processor returned {type(answer).__name__}: expected None or a mapping "
            "of record index to message"
        )
    known = set(indexes)
    failures: dict[int, str] = {}
    for index, message in answer.items():
        if isinstance(index, bool) or not isinstance(index, int) or index not in known:
            raise BadAnswer(
                f"batch_processor returned record index {index!r}, which is not one of "
                "the batch's record_indexes"
            )
        if not isinstance(message, str):
            raise BadAnswer(
                f"batch_processor returned {type(message).__name__} as the message of "
                f"record {index}: expected a string"
            )
        failures[index] = message
    return failures
