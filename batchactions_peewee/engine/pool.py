"""Worker processes on one machine: ``run_workers`` spawns them and waits for the job.

Each process opens a store of its own through ``WorkerSettings.open_store``, a picklable
callable the caller supplies (the CLI's opens a database URL), so this module imports no
Peewee. One worker runs on a thread of the caller's process, more in spawned processes that
end when it dies. The first Ctrl-C asks every worker to stop after the batch in hand, the
first SIGTERM after the record in hand (the batch given back); a second signal ends them.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.queues
import os
import queue
import signal
import sys
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
    EventHandler,
    RecordFailed,
    WorkerEvent,
    WorkerSummary,
)
from .supervision import EXIT_SIGTERM, SignalRelay, die_with_parent, pool_worker_ids
from .worker import Worker

POLL_S = 0.5
STOP_POLL_S = 0.05

logger = logging.getLogger(__name__)


def _nothing() -> None:
    """The default hook: does nothing."""


def _told(signum: int) -> None:
    """The default of ``run_workers``' ``on_interrupt``: does nothing."""


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
    limits; ``concurrency`` is each worker's records in flight (``Worker(concurrency=...)``);
    ``worker_id`` names the worker (``ID-1`` .. ``ID-N`` for N of them), else each picks one;
    ``load_observer`` gives a handler that gets the worker's events too (None: none).
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
    worker_id: str | None = None
    load_observer: Callable[[], EventHandler | None] = _nothing


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
    number: int,
    settings: WorkerSettings,
    events: _StopEvents,
    results: Any,
    worker_id: str | None,
    parent: int,
) -> None:  # pragma: no cover - runs in a spawned process
    # Ctrl-C goes to the parent, which asks every worker to stop after its batch in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    mine = threading.Event()  # this child's own SIGTERM or orphaning: drain it alone

    def on_sigterm(signum: int, frame: object) -> None:
        if mine.is_set():  # this child's second SIGTERM: at once
            os._exit(EXIT_SIGTERM)
        mine.set()

    def orphaned() -> None:
        results.cancel_join_thread()  # nobody reads the queue any more
        mine.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    die_with_parent(parent, orphaned)
    settings.setup()
    _report(number, settings, _StopEvents(events.stop, events.drain, mine), results, worker_id)


def _report(
    number: int, settings: WorkerSettings, events: _StopEvents, results: Any, worker_id: str | None
) -> None:
    """Run one worker and put its outcome (and interim summaries) on ``results``."""
    tally = _Tally(number, results)
    try:
        summary = _run_worker(settings, events, tally, worker_id)
    except Exception as exc:
        logger.debug("worker %d failed", number, exc_info=True)
        interim = tally.interim() if tally.batches else None
        results.put(WorkerOutcome(number, summary=interim, error=settings.describe_error(exc)))
    else:
        results.put(WorkerOutcome(number, summary=tally.summary(summary)))


@dataclasses.dataclass(frozen=True)
class _StopEvents:
    """``stop``: after the batch in hand (Ctrl-C); ``drain``: after the record in hand,
    the batch given back (SIGTERM), for every worker; ``mine``: drain this one only."""

    stop: Any
    drain: Any
    mine: Any = None


def _run_worker(
    settings: WorkerSettings, events: _StopEvents, tally: _Tally, worker_id: str | None
) -> WorkerSummary:
    observer = settings.load_observer()
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
            worker_id=worker_id,
            on_event=tally if observer is None else _both(tally, observer),
            concurrency=settings.concurrency,
        )
        finished = threading.Event()
        watch = threading.Thread(target=_stop_when_asked, args=(worker, events, finished))
        watch.start()
        try:
            return worker.run(
                settings.job_id,
                max_batches=settings.max_batches,
                max_duration_ms=settings.max_duration_ms,
            )
        finally:
            finished.set()
            watch.join()


def _both(tally: _Tally, observer: EventHandler) -> EventHandler:
    def handle(event: WorkerEvent) -> None:
        tally(event)
        observer(event)

    return handle


def _stop_when_asked(worker: Worker, events: _StopEvents, finished: threading.Event) -> None:
    stopped = False
    # Waiting on the drain event itself: a SIGTERM takes effect at once, not a poll later
    # (records a few milliseconds long would go on being processed meanwhile).
    while not finished.is_set():
        events.drain.wait(STOP_POLL_S)
        if finished.is_set():
            return
        if events.drain.is_set() or (events.mine is not None and events.mine.is_set()):
            worker.drain()
            return
        if events.stop.is_set() and not stopped:
            worker.stop()
            stopped = True


@dataclasses.dataclass(frozen=True)
class Interruption:
    """How a pool was stopped: the first signal's number, and the second's if one came
    (the workers were then ended at once)."""

    first: int
    second: int | None = None


class _InProcess:
    """One worker on a thread of this process, with a process's face for ``run_workers``."""

    exitcode: int | None = 0

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._thread = threading.Thread(target=target, args=args, name="worker-1", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()


def run_workers(
    settings: WorkerSettings,
    count: int,
    *,
    poll: Callable[[], object] = _nothing,
    on_interrupt: Callable[[int], object] = _told,
    name: str = "batchactions",
) -> tuple[list[WorkerOutcome], Interruption | None]:
    """Run ``count`` workers until the job is done, calling ``poll`` every ``POLL_S``
    seconds meanwhile: one runs on a thread of this process, more are spawned processes
    (each with its own store, named ``{name}-worker-{n}``), which end when this process
    dies. Returns their outcomes by number and how the run was interrupted, if it was:
    the first Ctrl-C asks the workers to stop after the batch in hand, the first SIGTERM
    after the record in hand (the batch given back); either calls ``on_interrupt(signum)``.
    A second signal of either kind ends the workers at once. Raises InvalidIdentifierError
    for a ``settings.worker_id`` that cannot name ``count`` workers."""
    worker_ids = pool_worker_ids(settings.worker_id, count)
    members, events, results = _start(settings, count, worker_ids, name)
    outcomes: dict[int, WorkerOutcome] = {}
    interruption: Interruption | None = None

    def on_signal(signum: int) -> None:
        nonlocal interruption
        if interruption is None:
            interruption = Interruption(signum)
            if signum == signal.SIGTERM:
                events.drain.set()
            events.stop.set()
            on_interrupt(signum)
        elif interruption.second is None:
            interruption = Interruption(interruption.first, signum)
            if members and isinstance(
                members[0], _InProcess
            ):  # a thread cannot be ended: the process
                sys.stderr.flush()
                os._exit(128 + signum)
            for member in members:
                member.kill()

    handlers = SignalRelay(on_signal)
    try:
        while True:
            _collect(results, outcomes, wait=POLL_S)
            poll()
            if interruption is not None and interruption.second is not None:
                break
            if not any(m.is_alive() for m in members):
                break
        for member in members:
            member.join()
    finally:
        handlers.restore()
    _collect(results, outcomes, wait=0)
    _fill_in(members, outcomes, forced=interruption is not None and bool(interruption.second))
    if isinstance(results, multiprocessing.queues.Queue):
        results.close()
    return [outcomes[n] for n in sorted(outcomes)], interruption


def _start(
    settings: WorkerSettings, count: int, worker_ids: list[str | None], name: str
) -> tuple[list[Any], _StopEvents, Any]:
    if count == 1:
        events = _StopEvents(threading.Event(), threading.Event())
        results: Any = queue.Queue()
        members: list[Any] = [_InProcess(_report, (1, settings, events, results, worker_ids[0]))]
    else:
        context = multiprocessing.get_context("spawn")
        events = _StopEvents(context.Event(), context.Event())
        results = context.Queue()
        members = [
            context.Process(
                target=_worker_process,
                args=(n, settings, events, results, worker_ids[n - 1], os.getpid()),
                name=f"{name}-worker-{n}",
            )
            for n in range(1, count + 1)
        ]
    for member in members:
        member.start()
    return members, events, results


def _fill_in(members: list[Any], outcomes: dict[int, WorkerOutcome], *, forced: bool) -> None:
    for number, member in enumerate(members, start=1):
        outcome = outcomes.get(number)
        if outcome is None or not outcome.ended:
            # Terminated (a second signal) or killed: what it wrote is in its last interim.
            ended = "was stopped" if forced else "ended"
            outcomes[number] = WorkerOutcome(
                number,
                summary=outcome.summary if outcome else None,
                error=f"the worker process {ended} with exit code {member.exitcode}",
            )


def _collect(results: Any, outcomes: dict[int, WorkerOutcome], wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            outcome: WorkerOutcome = results.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            return
        if outcome.ended or not outcomes.get(outcome.number, outcome).ended:
            outcomes[outcome.number] = outcome
