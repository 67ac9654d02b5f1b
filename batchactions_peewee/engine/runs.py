"""What a run of a worker (``Worker`` or ``AsyncWorker``) keeps and decides outside the
loop itself: its tally, its limits, its worker id, the pause after a store error and the
BatchResult of a batch."""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidValueError
from ..logfields import log_fields
from ..model import BatchReservation
from .batch import BatchWork
from .events import BatchResult, EventHandler, WorkerEvent, WorkerSummary


def default_worker_id() -> str:
    """Host, pid and a random suffix: unique per worker, at most 128 characters."""
    host = socket.gethostname()[:80] or "worker"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass
class Tally:
    """What ``Worker.run`` has done so far."""

    batches: int = 0
    processed: int = 0
    failed: int = 0
    retries: int = 0
    leases_lost: int = 0
    store_errors: int = 0
    finalized: bool = False
    stopped: str = "done"
    paused: bool = False  # the job was seen PAUSED and has not been seen resumed since

    def summary(self, job_id: str, worker_id: str) -> WorkerSummary:
        """What ``run`` returns: this tally as the run's WorkerSummary."""
        return WorkerSummary(
            job_id=job_id,
            worker_id=worker_id,
            batches=self.batches,
            processed=self.processed,
            failed=self.failed,
            finalized=self.finalized,
            retries=self.retries,
            leases_lost=self.leases_lost,
            store_errors=self.store_errors,
            stopped=self.stopped,
        )

    def add(self, result: BatchResult) -> None:
        self.finalized = self.finalized or result.finalized
        if not result.claimed or result.aborted or result.given_back:
            return
        if result.lease_lost:
            self.leases_lost += 1
        else:
            self.batches += 1
        self.processed += result.processed_count
        self.failed += result.failed_count
        self.retries += result.retries


@dataclass(frozen=True)
class Limits:
    """When ``run`` stops at a batch boundary, for cron and serverless runs."""

    max_batches: int | None
    deadline: float | None  # time.monotonic()

    @staticmethod
    def of(max_batches: int | None, max_duration_ms: int | None) -> Limits:
        for value, what in ((max_batches, "max_batches"), (max_duration_ms, "max_duration_ms")):
            if value is not None and (non_negative(value, what) == 0):
                raise InvalidValueError(f"{what} must be positive, got 0")
        deadline = None if max_duration_ms is None else time.monotonic() + max_duration_ms / 1000
        return Limits(max_batches, deadline)

    def reached(self, batches: int) -> bool:
        return (self.max_batches is not None and batches >= self.max_batches) or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )


def poll_interval_s(lease_timeout_ms: int) -> float:
    """How long an idle worker waits between looks at its job: often enough to take over a
    dead worker's batch soon after its lease ends, and 0.2 s at most at the end of a job."""
    return min(0.2, max(0.05, lease_timeout_ms / 10_000))


def emit_safely(
    on_event: EventHandler, event: WorkerEvent, worker_id: str, log: logging.Logger
) -> None:
    """``on_event(event)``; what it raises is logged on the worker's ``log``, never the
    worker's failure."""
    try:
        on_event(event)
    except Exception:
        log.exception(
            "on_event raised for %s; ignored",
            type(event).__name__,
            extra=log_fields(event.job_id, worker_id=worker_id),
        )


def store_error_pause(in_a_row: int, cap_s: float) -> float:
    """The wait after the ``in_a_row``-th store error in a row: exponential, capped and
    jittered, so that workers cut off together do not all come back at once."""
    ceiling = min(cap_s, 0.1 * 2 ** (in_a_row - 1))
    return random.uniform(ceiling / 2, ceiling)


def batch_result(res: BatchReservation, work: BatchWork, **outcome: Any) -> BatchResult:
    """The BatchResult of a claimed batch."""
    return BatchResult(
        claimed=True,
        job_id=res.job_id,
        batch_id=res.batch_id,
        batch_index=res.batch_index,
        retries=work.retries,
        **outcome,
    )


def non_negative(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
