"""One batch's records: validated against the schema and processed in index order, each
retried with exponential backoff, until the batch is done or its lease is lost."""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypedDict

import pydantic

from ..logfields import log_fields
from ..model import (
    BatchReservation,
    BatchStatus,
    Processed,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
    trusted_record,
)
from .events import (
    BatchCompleted,
    BatchFailed,
    ProcessingContext,
    WorkerEvent,
    batch_contexts,
    record_error,
)
from .validation import utf8_text, validate_record

logger = logging.getLogger(__name__)

Processor = Callable[[dict[str, Any], ProcessingContext], object]
#: A record processed without error: (index, raw, parsed, retries).
Done = tuple[int, dict[str, Any], dict[str, Any], int]
#: A record ready for the processor: (parsed, what the processor gets).
Ready = tuple[dict[str, Any], dict[str, Any]]


class Completion(TypedDict):
    """A batch's work as ``_complete_batch_processed`` takes it (typed, so mypy checks
    ``**work.completion()`` against the store's signature)."""

    status: BatchStatus
    processed_count: int
    failed_count: int
    processed: list[Processed]
    records: list[ProcessedRecord]


@dataclass
class BatchWork:
    """What processing one batch's records produced: the records processed without error
    and without retries as (index, raw, parsed) in ``done``, the others in ``records``."""

    done: list[Processed] = field(default_factory=list)
    records: list[ProcessedRecord] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    retries: int = 0
    failure: ProcessedRecord | None = None  # the record that failed the batch
    lease_lost: bool = False

    @property
    def status(self) -> BatchStatus:
        """The batch's final status: FAILED once a record failed it."""
        return BatchStatus.COMPLETED if self.failure is None else BatchStatus.FAILED

    def completion(self) -> Completion:
        """The keyword arguments of ``_complete_batch_processed`` that write this work."""
        return {
            "status": self.status,
            "processed_count": self.processed,
            "failed_count": self.failed,
            "processed": self.done,
            "records": self.records,
        }

    def add(
        self,
        res: BatchReservation,
        result: Done | ProcessedRecord,
        continue_on_error: bool,
        on_failed: Callable[[BatchReservation, ProcessedRecord], None],
    ) -> bool:
        """Count one record's result, in index order; True when it ends the batch (a
        failed or invalid record, unless ``continue_on_error``)."""
        if isinstance(result, tuple):
            index, kept, parsed, retries = result
            if retries:  # its retry count goes with it, in a ProcessedRecord
                self.records.append(
                    trusted_record(index, kept, parsed, RecordStatus.PROCESSED, None, retries)
                )
            else:
                self.done.append((index, kept, parsed))
            self.retries += retries
            self.processed += 1
            return False
        self.records.append(result)
        self.retries += result.retry_count or 0
        self.failed += 1
        on_failed(res, result)
        if continue_on_error:
            return False
        self.failure = result
        return True


@dataclass(frozen=True)
class RecordProcessing:
    """How a worker validates and processes one record, in three steps: ``prepare``
    (validation; with hooks, those before the processor), the processor's attempts and
    ``finish`` (with hooks, ``after_process``). The async path (engine/concurrency.py)
    runs the same two outer steps around attempts it awaits."""

    processor: Processor
    schema: type[pydantic.BaseModel] | None
    max_retries: int
    retry_delay_ms: int
    wait: Callable[[float, threading.Event], None]

    def __call__(
        self, index: int, raw: dict[str, Any], context: ProcessingContext
    ) -> Done | ProcessedRecord | None:
        """Validate and process one record: (index, raw, parsed, retries) once processed, a
        ProcessedRecord if it failed or is invalid, None when the lease is lost mid-retry.

        Every record of the batch is processed, whatever its stored status: results are
        only ever written together with the batch's final state, so a claimed batch holds
        no result that could be kept (at-least-once processing).
        """
        # prepare, _attempts and finish, inlined: the plain pipeline is the hot path.
        parsed = raw
        if self.schema is not None:
            parsed, errors = validate_record(self.schema, raw)
            if errors:
                return invalid_record(index, raw, errors)
        return self._attempts(index, raw, parsed, parsed, context)

    def prepare(
        self, index: int, raw: dict[str, Any], context: ProcessingContext
    ) -> Ready | ProcessedRecord:
        """The steps before the processor: (parsed, what the processor gets), or the
        ProcessedRecord of a record that ends here (invalid)."""
        if self.schema is None:
            return raw, raw
        parsed, errors = validate_record(self.schema, raw)
        if errors:
            return invalid_record(index, raw, errors)
        return parsed, parsed

    def finish(
        self,
        index: int,
        raw: dict[str, Any],
        ready: Ready,
        result: Done | ProcessedRecord | None,
        context: ProcessingContext,
    ) -> Done | ProcessedRecord | None:
        """The steps after the processor's attempts: none here."""
        return result

    def _attempts(
        self,
        index: int,
        raw: dict[str, Any],
        parsed: dict[str, Any],
        given: dict[str, Any],
        context: ProcessingContext,
    ) -> Done | ProcessedRecord | None:
        """Give ``given`` to the processor until it succeeds or the retries run out; the
        result keeps ``raw`` and ``parsed``. None when the lease is lost mid-retry."""
        attempt = 0
        while True:
            try:
                outcome = self.processor(given, context)
                if outcome is not None and inspect.isawaitable(outcome):
                    refuse_awaitable(outcome)
            except Exception as exc:
                if attempt >= self.max_retries:
                    return failed_record(index, raw, parsed, exc, attempt)
                attempt += 1
                logger.debug(
                    "record %d failed (%s); retry %d",
                    index,
                    exc,
                    attempt,
                    extra=log_fields(context.job_id, context.batch_id),
                )
                self.wait(self.retry_delay_ms * 2 ** (attempt - 1) / 1000, context.lease_lost)
                if context.lease_lost.is_set():
                    return None
                continue
            # What succeeded() returns, inlined (the hot path): see why there.
            kept = dict(raw)
            return index, kept, kept if parsed is raw else parsed, attempt


def succeeded(index: int, raw: dict[str, Any], parsed: dict[str, Any], retries: int) -> Done:
    """A record the processor took: (index, raw, parsed, retries)."""
    # No model per record: every value comes from a validated record or from the schema's
    # JSON-mode dump (a dict: checked by validate_record). raw is copied, as validation
    # would, so a processor that keeps the dict and changes it later cannot change what is
    # stored.
    kept = dict(raw)
    return index, kept, kept if parsed is raw else parsed, retries


def refuse_awaitable(outcome: object) -> None:
    """Raise for what an ``async def`` processor wrapped in a plain function returns: it
    would never be awaited, and its record would count as processed."""
    close = getattr(outcome, "close", None)
    if callable(close):
        close()  # no "never awaited" warning: this error says it
    raise TypeError(
        f"the processor returned {type(outcome).__name__}, which a plain function's "
        "caller does not await: declare the processor async def"
    )


def invalid_record(
    index: int, raw: dict[str, Any], errors: list[ValidationError]
) -> ProcessedRecord:
    """The record as stored when it fails the schema: its raw data as its parsed data."""
    return ProcessedRecord(
        index=index, raw=raw, parsed=raw, status=RecordStatus.INVALID, errors=errors
    )


def failed_record(
    index: int,
    raw: dict[str, Any],
    parsed: dict[str, Any],
    exc: Exception,
    retries: int | None,
) -> ProcessedRecord:
    """The record as stored when its processor (or a hook) raised ``exc``."""
    return ProcessedRecord(
        index=index,
        raw=raw,
        parsed=parsed,
        status=RecordStatus.FAILED,
        processing_error=utf8_text(str(exc) or type(exc).__name__),
        retry_count=retries,
    )


def process_records(
    records: list[tuple[int, dict[str, Any]]],
    res: BatchReservation,
    *,
    total: int,
    lease_lost: threading.Event,
    process: RecordProcessing,
    continue_on_error: bool,
    on_failed: Callable[[BatchReservation, ProcessedRecord], None],
) -> BatchWork:
    """Process the batch's (index, raw) records in order; stop at the first failure unless
    ``continue_on_error``, and as soon as the lease is lost."""
    work = BatchWork()
    context = batch_contexts(res.job_id, res.batch_id, res.batch_index, total, lease_lost)
    lost, add = lease_lost.is_set, work.add
    for index, raw in records:
        if lost():
            work.lease_lost = True
            return work
        result = process(index, raw, context(index))
        if result is None:  # the lease was lost while waiting to retry
            work.lease_lost = True
            return work
        if add(res, result, continue_on_error, on_failed):
            break
    return work


def batch_done_event(
    res: BatchReservation, worker_id: str, work: BatchWork, elapsed_ms: int
) -> WorkerEvent:
    """BatchCompleted, or BatchFailed when a record failed the batch."""
    if work.failure is None:
        return BatchCompleted(
            res.job_id,
            worker_id,
            res.batch_id,
            res.batch_index,
            work.processed,
            work.failed,
            work.retries,
            elapsed_ms,
        )
    return BatchFailed(
        res.job_id,
        worker_id,
        res.batch_id,
        res.batch_index,
        work.processed,
        work.failed,
        work.retries,
        elapsed_ms,
        work.failure.index,
        record_error(work.failure),
    )
