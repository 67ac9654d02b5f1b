"""``metrics_text``: the state of every job in the database in the Prometheus text format,
read from the tables, so one exporter (``batchactions-peewee metrics``, or the dashboard's
``/metrics``) sees the whole fleet of workers, whichever machines they run on.

Every value is a gauge read at scrape time. Jobs that are not terminal (CREATED,
PROCESSING, PAUSED; at most ``MAX_JOBS`` of each, the most recently started) get their
records, batches, leases and rate; finished jobs are only counted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import InvalidInputError
from .model import BatchStatus, JobState, JobStatus
from .reports import figures_of, lease_is_stale
from .store import PeeweeStateStore

#: Non-terminal jobs of each status described one by one, at most.
MAX_JOBS = 1000
#: A lease older than this (the workers' default lease timeout) counts as stale, in ms.
DEFAULT_LEASE_TIMEOUT_MS = 300_000
#: Leases read per job, at most (a job holds one per working worker).
MAX_LEASES = 10_000

_LIVE = (JobStatus.CREATED, JobStatus.PROCESSING, JobStatus.PAUSED)
_RECORD_FIGURES = ("pending", "processed", "invalid", "failed")


@dataclass
class _Family:
    """One metric: its name, help, and samples of (labels, value)."""

    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterator[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.samples:
            yield f"{self.name}{_labels(labels)} {_number(value)}"


def metrics_text(
    store: PeeweeStateStore, *, lease_timeout_ms: int = DEFAULT_LEASE_TIMEOUT_MS
) -> str:
    """Prometheus text exposition of the store's jobs: jobs by status; for each job that is
    not terminal its records and batches by status, its leases held and stale (older
    than ``lease_timeout_ms``), the age of its oldest lease, and, while PROCESSING, its
    records per second. Read from the database; names no database URL or credential."""
    if type(lease_timeout_ms) is not int or lease_timeout_ms < 1:
        raise InvalidInputError(
            f"lease_timeout_ms must be a whole number >= 1, got {lease_timeout_ms!r}"
        )
    jobs = _Family("batchactions_jobs", "Jobs by status.")
    records = _Family("batchactions_job_records", "Records of each unfinished job by status.")
    batches = _Family("batchactions_job_batches", "Batches of each unfinished job by status.")
    held = _Family("batchactions_leases_held", "Batches of each unfinished job held by a worker.")
    stale = _Family(
        "batchactions_leases_stale",
        "Leases of each unfinished job older than the lease timeout (their workers may be gone).",
    )
    oldest = _Family(
        "batchactions_oldest_lease_age_seconds",
        "Age of the oldest lease held on each unfinished job (0 when none is held).",
    )
    speed = _Family(
        "batchactions_job_records_per_second",
        "Records done per second since each PROCESSING job started.",
    )
    counts = store.job_counts()
    for status in JobStatus:
        jobs.add(counts.get(status.value, 0), status=status.value)
    now = store.now()
    for job in _live_jobs(store):
        figures = figures_of(job, store.record_counts(job.id), now)
        for name in _RECORD_FIGURES:
            records.add(getattr(figures, name), job_id=job.id, status=name)
        by_status = store.batch_counts(job.id)
        for batch_status in BatchStatus:
            batches.add(
                by_status.get(batch_status.value, 0), job_id=job.id, status=batch_status.value
            )
        leases = store.get_batches_page(job.id, status=BatchStatus.PROCESSING, limit=MAX_LEASES)
        held.add(len(leases), job_id=job.id)
        stale.add(
            sum(lease_is_stale(b.claimed_at, now, lease_timeout_ms) for b in leases), job_id=job.id
        )
        ages = [max(0, now - b.claimed_at) for b in leases if b.claimed_at is not None]
        oldest.add(max(ages, default=0) / 1000, job_id=job.id)
        if job.status is JobStatus.PROCESSING:
            speed.add(figures.records_per_second or 0.0, job_id=job.id)
    families = (jobs, records, batches, held, stale, oldest, speed)
    return "".join(f"{line}\n" for family in families for line in family.lines())


def _live_jobs(store: PeeweeStateStore) -> Iterable[JobState]:
    for status in _LIVE:
        yield from store.list_job_heads(status, limit=MAX_JOBS)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
