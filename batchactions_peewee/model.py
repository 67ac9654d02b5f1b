"""The domain model and its arithmetic: frozen pydantic models whose JSON is that of the
TypeScript core, and the progress and status figures computed from them.

Python attributes are snake_case; ``model_dump(by_alias=True)`` gives the camelCase JSON of
``@batchactions/core`` and both spellings are accepted on input. Timestamps are epoch ms.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from pydantic.alias_generators import to_camel

Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]


class JobStatus(str, enum.Enum):
    """Where a job is in its lifecycle."""

    CREATED = "CREATED"
    PREVIEWING = "PREVIEWING"
    PREVIEWED = "PREVIEWED"
    PROCESSING = "PROCESSING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    ABORTED = "ABORTED"
    FAILED = "FAILED"

    @staticmethod
    def can_transition(frm: JobStatus | str, to: JobStatus | str) -> bool:
        """True when the lifecycle allows moving a job from ``frm`` to ``to``."""
        return JobStatus(to) in _TRANSITIONS[JobStatus(frm)]

    @property
    def is_terminal(self) -> bool:
        """COMPLETED, ABORTED and FAILED are final."""
        return not _TRANSITIONS[self]


_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.CREATED: frozenset({JobStatus.PREVIEWING, JobStatus.PROCESSING}),
    JobStatus.PREVIEWING: frozenset({JobStatus.PREVIEWED, JobStatus.FAILED}),
    JobStatus.PREVIEWED: frozenset({JobStatus.PROCESSING}),
    JobStatus.PROCESSING: frozenset(
        {JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.ABORTED, JobStatus.FAILED}
    ),
    JobStatus.PAUSED: frozenset({JobStatus.PROCESSING, JobStatus.ABORTED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.ABORTED: frozenset(),
    JobStatus.FAILED: frozenset(),
}


class BatchStatus(str, enum.Enum):
    """Where a batch is: waiting, held by a worker, or done."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class RecordStatus(str, enum.Enum):
    """The outcome of one record (lower-case values, as the TypeScript core)."""

    VALID = "valid"
    INVALID = "invalid"
    PROCESSED = "processed"
    FAILED = "failed"
    PENDING = "pending"


#: Record statuses that progress counts as failed, and as still to do.
FAILED_RECORD_STATUSES = (RecordStatus.FAILED.value, RecordStatus.INVALID.value)
PENDING_RECORD_STATUSES = (RecordStatus.PENDING.value, RecordStatus.VALID.value)
#: Batch statuses a batch ends in.
TERMINAL_BATCH_STATUSES = (BatchStatus.COMPLETED.value, BatchStatus.FAILED.value)


class ClaimFailureReason(str, enum.Enum):
    """Why ``claim_batch`` returned no reservation."""

    NO_PENDING_BATCHES = "NO_PENDING_BATCHES"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    JOB_NOT_PROCESSING = "JOB_NOT_PROCESSING"


class DomainModel(BaseModel):
    """Frozen, camelCase-aliased base of every domain model."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_enum_values=False,
    )

    def to_json_dict(self) -> dict[str, Any]:
        """The TypeScript core's JSON shape: camelCase keys, declared optionals left out when
        None (as ``undefined`` is in JavaScript). Unknown keys are kept as given, None too."""
        # Python mode on purpose: JSON mode would turn NaN into null; the codec rejects it.
        unset = {name for name in type(self).model_fields if getattr(self, name) is None}
        return self.model_dump(by_alias=True, exclude=unset)


class ValidationError(DomainModel):
    """One problem found while validating a record."""

    field: str
    message: str
    code: str
    value: Any = None
    severity: Literal["error", "warning"] | None = None
    category: str | None = None
    suggestion: str | None = None
    metadata: dict[str, Any] | None = None


class ProcessedRecord(DomainModel):
    """One source record with its parsed form, status and errors."""

    index: Int
    raw: dict[str, Any]
    parsed: dict[str, Any]
    status: RecordStatus
    errors: list[ValidationError] = Field(default_factory=list)
    processing_error: str | None = None
    retry_count: Int | None = None


_set = object.__setattr__


def trusted_record(
    index: int,
    raw: dict[str, Any],
    parsed: dict[str, Any],
    status: RecordStatus,
    processing_error: str | None = None,
    retry_count: int | None = None,
) -> ProcessedRecord:
    """A ProcessedRecord without errors, built without validation from values that already
    have their fields' types: read back from our own JSON, or taken from a validated record.

    Equal to ``ProcessedRecord(...)`` of the same values, with the same fields marked as
    set (the unit tests check both, and that the model has no validator or
    post-init hook this would skip), without validation's cost; ``raw``/``parsed`` are kept as
    given, not copied. Sets what pydantic's own ``model_construct`` sets, without its
    per-field loop (which is slower than validating).
    """
    record = ProcessedRecord.__new__(ProcessedRecord)
    _set(
        record,
        "__dict__",
        {
            "index": index,
            "raw": raw,
            "parsed": parsed,
            "status": status,
            "errors": [],
            "processing_error": processing_error,
            "retry_count": retry_count,
        },
    )
    fields_set = {"index", "raw", "parsed", "status"}  # as validation would mark them
    if processing_error is not None:
        fields_set.add("processing_error")
    if retry_count is not None:
        fields_set.add("retry_count")
    _set(record, "__pydantic_fields_set__", fields_set)
    _set(record, "__pydantic_extra__", None)
    _set(record, "__pydantic_private__", None)
    return record


class Batch(DomainModel):
    """A slice of a job's records, claimed and processed as one unit."""

    id: str
    index: Int
    status: BatchStatus
    records: list[ProcessedRecord] = Field(default_factory=list)
    processed_count: Int = 0
    failed_count: Int = 0
    worker_id: str | None = None
    claimed_at: Int | None = None
    record_start_index: Int | None = None
    record_end_index: Int | None = None


class BatchState(DomainModel):
    """The mutable part of a batch, as ``update_batch_state`` writes it."""

    batch_id: str
    status: BatchStatus
    processed_count: Int
    failed_count: Int


class JobConfig(DomainModel):
    """A job's configuration. Only ``batch_size`` is required; unknown keys are kept."""

    model_config = ConfigDict(extra="allow")

    batch_size: Int
    id: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    max_concurrent_batches: Int | None = None
    continue_on_error: Bool | None = None
    max_retries: Int | None = None
    retry_delay_ms: Int | None = None
    skip_empty_rows: Bool | None = None


class JobState(DomainModel):
    """Everything the store knows about one job."""

    id: str
    config: JobConfig
    status: JobStatus
    batches: list[Batch] = Field(default_factory=list)
    total_records: Int = 0
    started_at: Int | None = None
    completed_at: Int | None = None
    distributed: Bool = False


class JobProgress(DomainModel):
    """Counts and timing of a job, as ``get_progress`` computes them."""

    total_records: Int
    processed_records: Int
    failed_records: Int
    pending_records: Int
    percentage: Int
    current_batch: Int
    total_batches: Int
    elapsed_ms: Int
    estimated_remaining_ms: Int | None = None


class BatchReservation(DomainModel):
    """A worker's hold on one batch. ``version`` is the fencing token."""

    job_id: str
    batch_id: str
    batch_index: Int
    worker_id: str
    claimed_at: Int
    record_start_index: Int
    record_end_index: Int
    version: Int


class ClaimBatchResult(DomainModel):
    """The outcome of ``claim_batch``: a reservation or a reason, never both."""

    claimed: Bool
    reservation: BatchReservation | None = None
    reason: ClaimFailureReason | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ClaimBatchResult:
        if self.claimed != (self.reservation is not None) or (self.reservation is None) == (
            self.reason is None
        ):
            raise ValueError("exactly one of reservation (claimed) and reason must be set")
        return self


class DistributedJobStatus(DomainModel):
    """Batch counts of a distributed job, as ``get_distributed_status`` computes them."""

    job_id: str
    total_batches: Int
    completed_batches: Int
    failed_batches: Int
    processing_batches: Int
    pending_batches: Int
    is_complete: Bool


#: A record processed without error, as a worker hands it over: (index, raw, parsed).
Processed = tuple[int, dict[str, Any], dict[str, Any]]


# -- arithmetic -----------------------------------------------------------------------


def js_round(value: float) -> int:
    """JavaScript's Math.round for non-negative numbers: halves go up."""
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def progress_of(
    *,
    total: int,
    processed: int,
    failed: int,
    completed_batches: int,
    total_batches: int,
    started_at: int | None,
    now: int,
) -> JobProgress:
    """A job's progress from its record and batch counts, as the TypeScript core computes it."""
    done = processed + failed
    return JobProgress(
        total_records=total,
        processed_records=processed,
        failed_records=failed,
        pending_records=max(0, total - done),
        # Computed as the TypeScript core does, (done / total) * 100 in doubles, so both
        # report the same number for the same job.
        percentage=js_round(done / total * 100) if total else 0,
        current_batch=completed_batches,
        total_batches=total_batches,
        elapsed_ms=max(0, now - started_at) if started_at is not None else 0,
        estimated_remaining_ms=None,
    )


def no_progress() -> JobProgress:
    """The progress of a job that does not exist: all zeros, as the reference adapters say."""
    return progress_of(
        total=0, processed=0, failed=0, completed_batches=0, total_batches=0, started_at=None, now=0
    )


def progress_from_records(job: JobState, counts: dict[str, int], now: int) -> JobProgress:
    """Progress of a job whose batches live in its JSON list, from record counts by status."""
    return progress_of(
        total=job.total_records,
        processed=counts.get(RecordStatus.PROCESSED.value, 0),
        failed=sum(counts.get(s, 0) for s in FAILED_RECORD_STATUSES),
        completed_batches=sum(1 for b in job.batches if b.status == BatchStatus.COMPLETED),
        total_batches=len(job.batches),
        started_at=job.started_at,
        now=now,
    )


def distributed_status_of(job_id: str, counts: dict[str, int]) -> DistributedJobStatus:
    """A job's distributed status from its batch counts by status."""
    total = sum(counts.values())
    completed = counts.get(BatchStatus.COMPLETED.value, 0)
    failed = counts.get(BatchStatus.FAILED.value, 0)
    return DistributedJobStatus(
        job_id=job_id,
        total_batches=total,
        completed_batches=completed,
        failed_batches=failed,
        processing_batches=counts.get(BatchStatus.PROCESSING.value, 0),
        pending_batches=counts.get(BatchStatus.PENDING.value, 0),
        is_complete=total > 0 and completed + failed == total,
    )
