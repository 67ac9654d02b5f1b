"""The figures every command shows of a job, each defined once here: the progress bar,
``status``, ``jobs``, the report of ``run`` and ``work``, and their ``--json`` forms.

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

from ..model import JobState, JobStatus, RecordStatus
from ..store import PeeweeStateStore


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
