"""``WorkerMetrics``: what the workers of one process did, as ``prometheus_client``
counters and a histogram, fed by their events (``Worker(on_event=metrics.observe)``).

``metrics_text`` reads the jobs' state from the database, for the whole fleet; these are
the other side, per process and cumulative: records and batches written, retries, batch
durations, leases lost and store errors outlived. Extra ``[prometheus]``.
"""

from __future__ import annotations

import re
import threading
from collections import Counter as _Tally

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
except ImportError as exc:  # pragma: no cover - tested in a process without it
    raise ImportError(
        "batchactions_peewee.contrib.prometheus needs prometheus-client: "
        "pip install 'batchactions-peewee[prometheus]'"
    ) from exc

from ..engine.events import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    JobAborted,
    LeaseLost,
    RecordFailed,
    StoreErrorOutlived,
    WorkerEvent,
)
from ..errors import InvalidInputError
from ..model import RecordStatus

#: Bounds of ``batch_duration_seconds``: a batch takes from milliseconds to minutes.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

__all__ = ["DURATION_BUCKETS", "WorkerMetrics"]


class WorkerMetrics:
    """Counters of the workers that pass it their events: give ``observe`` as
    ``Worker(on_event=metrics.observe)``; one instance may serve every worker of a process
    (it is thread-safe). Registered in ``registry``, by default prometheus_client's
    ``REGISTRY`` (what ``start_http_server`` and ``generate_latest`` serve), as other
    client libraries do; a name already registered there raises ``ValueError``, so create
    one per registry. Names start with ``namespace`` (``batchactions``):

    - ``_records_total{job_id, outcome}``: records this process wrote, ``outcome``
      ``processed``, ``invalid`` (failed validation) or ``failed`` (processing failed);
      counted once their batch is written, never for a batch whose lease was lost;
    - ``_batches_total{job_id, outcome}``: batches written, ``completed`` or ``failed``;
    - ``_batch_duration_seconds{job_id}`` (histogram): from claim to written, per batch;
    - ``_record_retries_total{job_id}``: processor retries in the batches written;
    - ``_leases_lost_total{job_id}``: batches given up because another worker may own
      them (their results were not written);
    - ``_store_errors_total{job_id}``: database failures the workers outlived
      (``WorkerSummary.store_errors``).

    A job's series all start at 0 with its first event.
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, namespace: str = "batchactions"
    ) -> None:
        if not isinstance(namespace, str) or not _NAME.fullmatch(namespace):
            raise InvalidInputError(f"namespace must be a metric name prefix, got {namespace!r}")
        into = REGISTRY if registry is None else registry
        self.registry = into
        self.records = Counter(
            "records",
            "Records written by this process's workers, by outcome.",
            ["job_id", "outcome"],
            namespace=namespace,
            registry=into,
        )
        self.batches = Counter(
            "batches",
            "Batches written by this process's workers, by outcome.",
            ["job_id", "outcome"],
            namespace=namespace,
            registry=into,
        )
        self.batch_duration = Histogram(
            "batch_duration_seconds",
            "Time from a batch's claim to its write.",
            ["job_id"],
            namespace=namespace,
            registry=into,
            buckets=DURATION_BUCKETS,
        )
        self.retries = Counter(
            "record_retries",
            "Processor retries in the batches written.",
            ["job_id"],
            namespace=namespace,
            registry=into,
        )
        self.leases_lost = Counter(
            "leases_lost",
            "Batches given up because another worker may own them; nothing written.",
            ["job_id"],
            namespace=namespace,
            registry=into,
        )
        self.store_errors = Counter(
            "store_errors",
            "Database failures the workers outlived (the batch in hand abandoned).",
            ["job_id"],
            namespace=namespace,
            registry=into,
        )
        self._lock = threading.Lock()
        # Invalid records of each worker's batch in hand: a batch's events only say how
        # many failed, invalid ones included (each worker's events come in batch order).
        self._invalid: dict[str, _Tally[str]] = {}
        self._jobs: set[str] = set()

    def observe(self, event: WorkerEvent) -> None:
        """Count ``event``; other kinds of event are ignored."""
        if event.job_id not in self._jobs:
            self._start(event.job_id)
        if isinstance(event, BatchClaimed):
            with self._lock:
                self._invalid.pop(event.worker_id, None)
        elif isinstance(event, RecordFailed):
            if event.status == RecordStatus.INVALID:
                with self._lock:
                    self._invalid.setdefault(event.worker_id, _Tally())[event.batch_id] += 1
        elif isinstance(event, (BatchCompleted, BatchFailed)):
            self._written(event)
        elif isinstance(event, LeaseLost):
            self._forget(event.worker_id)
            self.leases_lost.labels(event.job_id).inc()
        elif isinstance(event, StoreErrorOutlived):
            self._forget(event.worker_id)
            self.store_errors.labels(event.job_id).inc()
        elif isinstance(event, JobAborted):
            self._forget(event.worker_id)

    def _written(self, event: BatchCompleted | BatchFailed) -> None:
        with self._lock:
            invalid = self._invalid.pop(event.worker_id, _Tally())[event.batch_id]
        job = event.job_id
        self.records.labels(job, "processed").inc(event.processed_count)
        self.records.labels(job, "invalid").inc(invalid)
        self.records.labels(job, "failed").inc(event.failed_count - invalid)
        outcome = "completed" if isinstance(event, BatchCompleted) else "failed"
        self.batches.labels(job, outcome).inc()
        self.batch_duration.labels(job).observe(event.elapsed_ms / 1000)
        self.retries.labels(job).inc(event.retries)

    def _start(self, job_id: str) -> None:
        """Every series of ``job_id`` at 0, so that ``rate`` and ``increase`` see its first
        lease lost or store error (a series born at 1 shows no increase)."""
        with self._lock:
            if job_id in self._jobs:
                return
            self._jobs.add(job_id)
        for outcome in ("processed", "invalid", "failed"):
            self.records.labels(job_id, outcome)
        for outcome in ("completed", "failed"):
            self.batches.labels(job_id, outcome)
        for metric in (self.batch_duration, self.retries, self.leases_lost, self.store_errors):
            metric.labels(job_id)

    def _forget(self, worker_id: str) -> None:
        with self._lock:
            self._invalid.pop(worker_id, None)
