"""What the CLI and the dashboard show of a job, each defined once here: its figures (the
progress bar, ``status``, ``jobs``, the report of ``run`` and ``work``, and their
``--json`` forms), the code it remembers and its status report (``status --json``, and the
dashboard's ``GET /api/jobs/{id}``) and the listing of recent jobs (``jobs --json``).

``failed`` is the records whose processing failed and ``invalid`` those that failed
validation: two figures, never added up under one name. ``pending`` is every record not
yet done. The percentage is rounded down, so 100% means that nothing is pending. The
elapsed time runs from ``started_at`` to ``completed_at``, or to now while the job runs.
(The port's ``get_progress`` keeps the TypeScript core's definitions: there ``failed``
counts invalid records too, the percentage is rounded half up and ``elapsed_ms`` runs to
the time of reading.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .checks import MAX_INT
from .model import BatchStatus, JobState, JobStatus, RecordStatus
from .store import PeeweeStateStore

#: The key of a job's config under which it remembers the code it was prepared with.
CODE_KEY = "code"


@dataclass(frozen=True, slots=True)
class Figures:
    """A job's record counts and time, as every command shows them."""

    total: int
    processed: int
    invalid: int
    failed: int
    elapsed_ms: int
    running: bool

    @property
    def done(self) -> int:
        return self.processed + self.invalid + self.failed

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done)

    @property
    def percentage(self) -> int:
        return self.done * 100 // self.total if self.total else 0

    @property
    def remaining_ms(self) -> int | None:
        """At the rate so far, while the job runs; None before the first record is done."""
        if not self.running or not self.done or not self.pending:
            return None
        return self.elapsed_ms * self.pending // self.done

    @property
    def records_per_second(self) -> float | None:
        return rate(self.done, self.elapsed_ms)

    def to_json(self) -> dict[str, Any]:
        return {
            "totalRecords": self.total,
            "processedRecords": self.processed,
            "invalidRecords": self.invalid,
            "failedRecords": self.failed,
            "pendingRecords": self.pending,
            "percentage": self.percentage,
            "elapsedMs": self.elapsed_ms,
            "estimatedRemainingMs": self.remaining_ms,
            "recordsPerSecond": self.records_per_second,
        }


def lease_is_stale(claimed_at: int | None, now: int, lease_timeout_ms: int) -> bool:
    """A lease older than ``lease_timeout_ms`` at ``now``, or without a claim time, is
    stale: its worker may be gone, and ``reclaim`` takes it."""
    return claimed_at is None or now - claimed_at > lease_timeout_ms


def rate(records: int, elapsed_ms: int) -> float | None:
    """Records per second to one decimal; None when no time has passed."""
    return round(records / (elapsed_ms / 1000), 1) if elapsed_ms else None


def figures_of(job: JobState, counts: dict[str, int], now: int) -> Figures:
    """``job``'s figures from its record counts by status (``record_counts``) at ``now``."""
    end = job.completed_at if job.completed_at is not None else now
    elapsed = max(0, end - job.started_at) if job.started_at is not None else 0
    return Figures(
        total=job.total_records,
        processed=counts.get(RecordStatus.PROCESSED.value, 0),
        invalid=counts.get(RecordStatus.INVALID.value, 0),
        failed=counts.get(RecordStatus.FAILED.value, 0),
        elapsed_ms=elapsed,
        running=JobStatus(job.status) in (JobStatus.PROCESSING, JobStatus.PAUSED),
    )


def figures(store: PeeweeStateStore, job: JobState) -> Figures:
    """``job``'s figures, read now."""
    return figures_of(job, store.record_counts(job.id), store.now())


def remembered_code(job: JobState) -> dict[str, str]:
    """The code options that ``job`` was prepared with (empty for a job of the library)."""
    code = (job.config.model_extra or {}).get(CODE_KEY)
    if not isinstance(code, dict):
        return {}
    return {k: v for k, v in code.items() if isinstance(k, str) and isinstance(v, str)}


def status_report(
    store: PeeweeStateStore,
    job: JobState,
    lease_timeout_ms: int,
    *,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """``status --json`` of ``job``: its figures, records and batches by status, and the
    leases held (stale once older than ``lease_timeout_ms``). ``counts``: the job's record
    counts by status, when the caller has them already."""
    now = store.now()
    counts = store.record_counts(job.id) if counts is None else counts
    # Read by status, so that a job of many batches is not read whole (``job.batches``
    # may be empty: a head from ``get_job_head``).
    held = store.get_batches_page(job.id, status=BatchStatus.PROCESSING, limit=MAX_INT)
    leases = [
        {
            "workerId": b.worker_id,
            "batchIndex": b.index,
            "batchId": b.id,
            "claimedAt": b.claimed_at,
            "heldMs": max(0, now - b.claimed_at) if b.claimed_at is not None else None,
            "stale": lease_is_stale(b.claimed_at, now, lease_timeout_ms),
        }
        for b in held
    ]
    extra = job.config.model_extra or {}
    return {
        "jobId": job.id,
        "status": job.status.value,
        "source": extra.get("source"),
        "code": remembered_code(job),
        "retryOf": extra.get("retryOf"),
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
        **figures_of(job, counts, now).to_json(),
        # A job still being prepared has no total yet: these are the rows written so far.
        "writtenRecords": sum(counts.values()),
        "records": counts,
        "batches": store.batch_counts(job.id),
        "leases": leases,
    }


def jobs_report(
    store: PeeweeStateStore, status: JobStatus | str | None, limit: int
) -> list[dict[str, Any]]:
    """``jobs --json``: the ``limit`` most recent jobs (of ``status``, if given) with their
    figures; for a job still being prepared, ``writtenRecords`` is the rows written so far."""
    now = store.now()
    return [
        job_summary(job, store.record_counts(job.id), now)
        for job in store.list_jobs(status=status, limit=limit)
    ]


def job_summary(job: JobState, counts: dict[str, int], now: int) -> dict[str, Any]:
    """One job of ``jobs --json`` (and the dashboard's ``GET /api/jobs``): its figures from
    its record counts by status at ``now``."""
    return {
        "jobId": job.id,
        "status": job.status.value,
        "source": (job.config.model_extra or {}).get("source"),
        **figures_of(job, counts, now).to_json(),
        "writtenRecords": sum(counts.values()),
        "startedAt": job.started_at,
        "completedAt": job.completed_at,
    }


#: Points of ``throughput`` at most: one per second for jobs of up to this many seconds.
THROUGHPUT_POINTS = 120


def throughput(job: JobState, timeline: list[tuple[int, int]], now: int) -> dict[str, Any]:
    """Records per second over the job's life, from its finished batches' last lease times
    (``batch_timeline``): each batch's records count at the time its lease was last taken
    or renewed, so the curve runs up to a batch early, and reads the same after a reload."""
    if job.started_at is None:
        return {"startedAt": None, "bucketMs": None, "points": []}
    start = job.started_at
    end = max(start + 1, job.completed_at if job.completed_at is not None else now)
    bucket = max(1000, -(-(end - start) // THROUGHPUT_POINTS // 1000) * 1000)
    done = [0] * -(-(end - start) // bucket)
    for at, records in timeline:
        done[min(len(done) - 1, max(0, (at - start) // bucket))] += records
    points = []
    for k, records in enumerate(done):
        width = min(bucket, end - (start + k * bucket))  # the last one may be cut short
        points.append({"at": start + k * bucket, "recordsPerSecond": rate(records, width)})
    return {"startedAt": start, "bucketMs": bucket, "points": points}
