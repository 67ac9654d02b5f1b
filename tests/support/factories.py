"""Small builders of domain objects for the tests."""

from __future__ import annotations

import uuid
from typing import Any

from batchactions_peewee import (
    Batch,
    BatchStatus,
    JobConfig,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
)

#: Epoch ms that ``FakeClock`` starts at and ``distributed_job`` says the job started at.
START_MS = 1_700_000_000_000


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[: 36 - len(prefix)]}"


def record(index: int, status: RecordStatus | str = "pending", **kw: Any) -> ProcessedRecord:
    data = {"n": index, "email": f"user{index}@example.com"}
    return ProcessedRecord(index=index, raw=data, parsed=data, status=status, **kw)


def job(
    *,
    batches: int = 3,
    per_batch: int = 2,
    distributed: bool = True,
    status: JobStatus | str = JobStatus.PROCESSING,
    job_id: str | None = None,
    started_at: int | None = 1_000,
) -> JobState:
    jid = job_id if job_id is not None else uid("job-")
    return JobState(
        id=jid,
        config=JobConfig(batch_size=per_batch),
        status=status,
        distributed=distributed,
        total_records=batches * per_batch,
        started_at=started_at,
        batches=[
            Batch(
                id=uid("b-"),
                index=i,
                status=BatchStatus.PENDING,
                record_start_index=i * per_batch,
                record_end_index=(i + 1) * per_batch - 1,
            )
            for i in range(batches)
        ],
    )


def distributed_job(
    batches: int, records_per_batch: int = 1, started_at: int = START_MS
) -> JobState:
    """A PROCESSING distributed job whose batches are all PENDING, with fresh unique ids."""
    return JobState(
        id=uuid.uuid4().hex,
        config=JobConfig(batch_size=records_per_batch),
        status=JobStatus.PROCESSING,
        batches=[
            Batch(
                id=uuid.uuid4().hex,
                index=i,
                status=BatchStatus.PENDING,
                record_start_index=i * records_per_batch,
                record_end_index=(i + 1) * records_per_batch - 1,  # inclusive
            )
            for i in range(batches)
        ],
        total_records=batches * records_per_batch,
        started_at=started_at,
        distributed=True,
    )
