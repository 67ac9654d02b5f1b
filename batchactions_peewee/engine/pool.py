"""Worker processes on one machine: ``run_workers`` spawns them and waits for the job.

Each process opens a store of its own through ``WorkerSettings.open_store``, a picklable
callable the caller supplies (the CLI's opens a database URL), so this module imports no
Peewee. Ctrl-C reaches only the parent: the first asks every worker to stop after the
batch in hand, a second terminates them.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pydantic

from ..model import RecordStatus
from ..ports import WorkerStore
from .batch import Processor
from .batch_processor import BatchProcessor
from .events import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    RecordFailed,
    WorkerEvent,
    WorkerSummary,
)
from .worker import Worker

POLL_S = 0.5

logger = logging.getLogger(__name__)


def _nothing() -> None:
    """The default hook: does nothing."""


def _describe(exc: Exception) -> str:
    """The default error text of a worker: the error's type and first line."""
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return f"{type(exc).__name__}: {lines[0]}"


@dataclasses.dataclass(frozen=True)
class WorkerSettings:
    """What a worker process needs to open its own store and run.

    Picklable, since the processes are spawned: every callable is a module-level function
    or a ``functools.partial`` of one, and each runs in the worker process. ``setup`` runs
    first (e.g. to configure logging); ``open_store`` gives the store, closed on exit;
    ``load_processor`` and ``load_schema`` give the ``Worker``'s processor and schema;
    ``load_batch_processor`` its batch processor (then ``load_processor`` gives None), run
    ``transactional`` or not; ``describe_error`` is the one-line text of an error that
    stopped the worker; ``max_batches`` and ``max_duration_ms`` are each worker's ``run``
    limits; ``concurrency`` is each worker's records in flight (``Worker(concurrency=...)``).
    """

    job_id: str
    open_store: Callable[[], AbstractContextManager[WorkerStore]]
    load_processor: Callable[[], Processor | None]
    load_schema: Callable[[], type[pydantic.BaseModel] | None]
    continue_on_error: bool
    max_retries: int
    retry_delay_ms: int
    lease_timeout_ms: int
    setup: Callable[[], object] = _nothing
    describe_error: Callable[[Exception], str] = _describe
    load_batch_processor: Callable[[], BatchProcessor | None] = _nothing
    transactional: bool = False
    max_batches: int | None = None
    max_duration_ms: int | None = None
    concurrency: int = 1


@dataclasses.dataclass(frozen=True)
class WorkerOutcome:
    """How one worker process ended: its summary, or the error that stopped it, or both
    when it was stopped after some batches (the summary then counts what it wrote).

    The summary is ``WorkerSummary``'s fields with ``failed`` split in two: ``invalid``
    (records that failed validation) and ``failed`` (records whose processing failed).
    ``ended`` is False for the interim summaries a worker sends after each batch."""

    number: int
    summary: dict[str, Any] | None = None
    error: str | None = None
    ended: bool = True


class _Tally:
    """A worker's records by outcome, counted from its events: a batch's failed records
    count once the batch is written, and not at all when its lease was lost."""

    def __init__(self, number: int, results: Any) -> None:
        self.number, self.results = number, results
        self.invalid = self.failed = self.processed = self.batches = 0
        self._batch: Counter[RecordStatus] = Counter()
        self.worker_id = ""

    def __call__(self, event: WorkerEvent) -> None:
        self.worker_id = event.worker_id
        if isinstance(event, BatchClaimed):
            self._batch.clear()
        elif isinstance(event, RecordFailed):
            self._batch[event.status] += 1
        elif isinstance(event, (BatchCompleted, BatchFailed)):
            self.batches += 1
            self.processed += event.processed_count
            self.invalid += self._batch[RecordStatus.INVALID]
            self.failed += event.failed_count - self._batch[RecordStatus.INVALID]
            self._batch.clear()
            self.results.put(WorkerOutcome(self.number, summary=self.interim(), ended=False))

    def interim(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "batches": self.batches,
            "processed": self.processed,
            "invalid": self.invalid,
            "failed": self.failed,
        }

    def summary(self, summary: WorkerSummary) -> dict[str, Any]:
        return {**dataclasses.asdict(summary), "invalid": self.invalid, "failed": self.failed}


def _worker_process(
    number: int, settings: WorkerSettings, stop: Any, results: Any
) -> None:  # pragma: no cover - runs in a spawned process
    # Ctrl-C goes to the parent, which asks every worker to stop after its batch in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings.setup()
    tally = _Tally(number, results)
    try:
        summary = _run_worker(settings, stop, tally)
    except Exception as exc:
        logger.debug("worker %d failed", number, exc_info=True)
        interim = tally.interim() if tally.batches else None
        results.put(WorkerOutcome(number, summary=interim, error=settings.describe_error(exc)))
    else:
        results.put(WorkerOutcome(number, summary=tally.summary(summary)))


def _run_worker(settings: WorkerSettings, stop: Any, tally: _Tally) -> WorkerSummary:
    with settings.open_store() as store:
        worker = Worker(
            store,
            settings.load_processor(),
            batch_processor=settings.load_batch_processor(),
            transactional=settings.transactional,
            schema=settings.load_schema(),
            continue_on_error=settings.continue_on_error,
            max_retries=settings.max_retries,
            retry_delay_ms=settings.retry_delay_ms,
            lease_timeout_ms=settings.lease_timeout_ms,
            on_event=tally,
            concurrency=settings.concurrency,
        )

        def stop_when_asked() -> None:
            stop.wait()
            worker.stop()

        threading.Thread(target=stop_when_asked, daemon=True).start()
        return worker.run(
            settings.job_id,
            max_batches=settings.max_batches,
            max_duration_ms=settings.max_duration_ms,
        )


def run_workers(
    settings: WorkerSettings,
    count: int,
    *,
    poll: Callable[[], object] = _nothing,
    on_interrupt: Callable[[], object] = _nothing,
    name: str = "batchactions",
) -> tuple[list[WorkerOutcome], bool]:
    """Run ``count`` worker processes (spawned, each with its own store) until the job is
    done, calling ``poll`` every ``POLL_S`` seconds meanwhile. Returns their outcomes by
    number and whether the run was interrupted: on the first Ctrl-C the workers are asked
    to stop after the batch in hand and ``on_interrupt`` is called; a second terminates
    them. The processes are named ``{name}-worker-{n}``."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    processes = [
        context.Process(
            target=_worker_process,
            args=(n, settings, stop, results),
            name=f"{name}-worker-{n}",
        )
        for n in range(1, count + 1)
    ]
    for process in processes:
        process.start()
    outcomes: dict[int, WorkerOutcome] = {}
    interrupted = False
    while True:
        try:
            _collect(results, outcomes, wait=POLL_S)
            poll()
            if not any(p.is_alive() for p in processes):
                break
        except KeyboardInterrupt:
            if interrupted:
                for process in processes:
                    process.terminate()
                break
            interrupted = True
            stop.set()
            on_interrupt()
    for process in processes:
        process.join()
    _collect(results, outcomes, wait=0)
    for number, process in enumerate(processes, start=1):
        outcome = outcomes.get(number)
        if outcome is None or not outcome.ended:
            # Terminated (a second Ctrl-C) or killed: what it wrote is in its last interim.
            ended = "was stopped" if process.exitcode == -signal.SIGTERM else "ended"
            outcomes[number] = WorkerOutcome(
                number,
                summary=outcome.summary if outcome else None,
                error=f"the worker process {ended} with exit code {process.exitcode}",
            )
    results.close()
    return [outcomes[n] for n in sorted(outcomes)], interrupted


def _collect(results: Any, outcomes: dict[int, WorkerOutcome], wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            outcome: WorkerOutcome = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return
        if outcome.ended or not outcomes.get(outcome.number, outcome).ended:
            outcomes[outcome.number] = outcome
