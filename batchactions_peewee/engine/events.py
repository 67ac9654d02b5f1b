"""What a worker reports: the context a processor gets, the results of ``process_next`` and
``run``, and the events passed to ``on_event``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import (
    BatchReservation,
    ClaimFailureReason,
    JobProgress,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
)


@dataclass(frozen=True, slots=True)
class ProcessingContext:
    """Where the record given to the processor sits in its job.

    ``lease_lost`` is set once the worker knows another worker may own the batch: a long
    processor may check it and give up early (its result would be discarded anyway).
    """

    job_id: str
    batch_id: str
    batch_index: int
    record_index: int
    total_records: int
    lease_lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


def batch_contexts(
    job_id: str, batch_id: str, batch_index: int, total_records: int, lease_lost: threading.Event
) -> Callable[[int], ProcessingContext]:
    """A maker of the contexts of one batch's records, by record index: the same objects
    ``ProcessingContext(...)`` builds, in half its time (a worker builds one per record).
    The frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``;
    this sets the slots directly, as that ``__init__`` ends up doing."""
    new = object.__new__
    slots = ProcessingContext.__dict__
    set_job, set_batch, set_batch_index, set_index, set_total, set_lost = (
        slots[name].__set__
        for name in (
            "job_id",
            "batch_id",
            "batch_index",
            "record_index",
            "total_records",
            "lease_lost",
        )
    )

    def context(record_index: int) -> ProcessingContext:
        made: ProcessingContext = new(ProcessingContext)
        set_job(made, job_id)
        set_batch(made, batch_id)
        set_batch_index(made, batch_index)
        set_index(made, record_index)
        set_total(made, total_records)
        set_lost(made, lease_lost)
        return made

    return context


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of ``Worker.process_next``.

    ``processed_count`` / ``failed_count`` count what this worker wrote (invalid records
    count as failed; nothing is written when the lease was lost). ``job_complete`` is True
    when every batch of the job is COMPLETED or FAILED (or the job had none and is done).
    ``retries`` counts processor retries, ``lease_lost`` says the batch was given up because
    another worker may own it, ``finalized`` that this call finalized the job, ``reason``
    why nothing was claimed, and ``aborted`` that the job was aborted while the batch was
    in hand (it was given back, nothing written). ``given_back`` says ``Worker.drain``
    (SIGTERM) stopped the worker with the batch in hand: it was released, nothing written.
    """

    claimed: bool
    job_id: str
    batch_id: str | None = None
    batch_index: int | None = None
    processed_count: int = 0
    failed_count: int = 0
    job_complete: bool = False
    retries: int = 0
    lease_lost: bool = False
    finalized: bool = False
    reason: ClaimFailureReason | None = None
    aborted: bool = False
    given_back: bool = False


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """The outcome of ``Worker.run``: batches written, records processed and failed by this
    worker, and whether it was the one worker that finalized the job; ``retries`` (processor
    retries), ``leases_lost`` (batches abandoned because another worker took them) and
    ``store_errors`` (database failures the run outlived: see ``Worker.run``). ``stopped``
    says why ``run`` returned: ``"done"`` (nothing left for this worker: the job is
    finished, or not claimable for another reason than a pause), ``"aborted"``, ``"limit"``
    (``max_batches`` or ``max_duration_ms`` reached) or ``"stopped"`` (``stop()``)."""

    job_id: str
    worker_id: str
    batches: int
    processed: int
    failed: int
    finalized: bool
    retries: int = 0
    leases_lost: int = 0
    store_errors: int = 0
    stopped: str = "done"


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """Base of the events a worker passes to ``on_event``."""

    job_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class BatchClaimed(WorkerEvent):
    """The worker claimed a batch and is about to process it."""

    batch_id: str
    batch_index: int
    record_start_index: int
    record_end_index: int

    @staticmethod
    def of(res: BatchReservation, worker_id: str) -> BatchClaimed:
        """The event of ``res``, just claimed by ``worker_id``."""
        return BatchClaimed(
            res.job_id,
            worker_id,
            res.batch_id,
            res.batch_index,
            res.record_start_index,
            res.record_end_index,
        )


@dataclass(frozen=True, slots=True)
class BatchCompleted(WorkerEvent):
    """A batch was written as COMPLETED (some of its records may have failed)."""

    batch_id: str
    batch_index: int
    processed_count: int
    failed_count: int
    retries: int
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class BatchFailed(WorkerEvent):
    """A batch was written as FAILED: a record failed and ``continue_on_error`` is False."""

    batch_id: str
    batch_index: int
    processed_count: int
    failed_count: int
    retries: int
    elapsed_ms: int
    record_index: int
    error: str


@dataclass(frozen=True, slots=True)
class RecordFailed(WorkerEvent):
    """A record failed validation (status invalid) or processing (status failed)."""

    batch_id: str
    batch_index: int
    record_index: int
    status: RecordStatus
    error: str
    retry_count: int


@dataclass(frozen=True, slots=True)
class LeaseLost(WorkerEvent):
    """Another worker may own the batch now: this worker's results were not written."""

    batch_id: str
    batch_index: int


@dataclass(frozen=True, slots=True)
class StoreErrorOutlived(WorkerEvent):
    """A database failure that ``run`` outlives (``WorkerSummary.store_errors`` counts
    them): the batch in hand, if any, was abandoned and the worker tries again after a
    pause. ``error`` is the failure's first line, ``in_a_row`` how many failed in a row."""

    error: str
    in_a_row: int


@dataclass(frozen=True, slots=True)
class JobCompleted(WorkerEvent):
    """This worker finalized the job; its summary as ``get_progress`` reports it."""

    status: JobStatus
    total: int
    processed: int
    failed: int
    elapsed_ms: int

    @staticmethod
    def of(job_id: str, worker_id: str, status: JobStatus, progress: JobProgress) -> JobCompleted:
        """The event of ``job_id``, finalized by ``worker_id``, as ``progress`` reports it."""
        return JobCompleted(
            job_id,
            worker_id,
            status,
            progress.total_records,
            progress.processed_records,
            progress.failed_records,
            progress.elapsed_ms,
        )


@dataclass(frozen=True, slots=True)
class JobPaused(WorkerEvent):
    """The job was paused: the worker waits, claiming nothing, until it is resumed."""


@dataclass(frozen=True, slots=True)
class JobResumed(WorkerEvent):
    """The paused job is PROCESSING again: the worker claims batches again."""


@dataclass(frozen=True, slots=True)
class JobAborted(WorkerEvent):
    """The job was aborted: the worker gave back any batch in hand and returns."""


EventHandler = Callable[[WorkerEvent], object]


def record_error(record: ProcessedRecord) -> str:
    """A failed record's processing error, or its validation errors in one line."""
    if record.processing_error is not None:
        return record.processing_error
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in record.errors)


def record_failed_event(
    res: BatchReservation, worker_id: str, record: ProcessedRecord
) -> RecordFailed:
    """The event of a record that failed validation or processing."""
    return RecordFailed(
        res.job_id,
        worker_id,
        res.batch_id,
        res.batch_index,
        record.index,
        record.status,
        record_error(record),
        record.retry_count or 0,
    )
