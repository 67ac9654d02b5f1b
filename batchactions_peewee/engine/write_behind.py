"""Write-behind for a worker with records in flight (``Worker(concurrency=N)``, N > 1):
a batch's results are written on a writer thread while the next batch's records are
processed, and the batch after it is claimed and read there too (read-ahead), so that no
record waits on the database between batches.

At most one write is behind at a time: before a batch's write is handed over, the one
before it has ended (``settle``), and so has any write before the worker looks for a
batch it could not claim, finalizes the job or returns. A write is the same fenced
completion as without write-behind, on the writer thread's own connection; its batch is
given back there if it was not written. What the write returns is turned into the
batch's ``BatchResult`` and events on the worker's own thread, in ``settle``.

Events keep the order they have without write-behind: those of the next batch
(``BatchClaimed``, ``RecordFailed``) are held while the write before it is behind, and
passed on once its ``BatchCompleted`` (or ``BatchFailed``, ``LeaseLost``) is.

Read-ahead: while a batch's records are in flight, the writer thread claims the next
batch (after the write before it), holds its lease and reads its records; the worker
takes it as its next batch instead of claiming one. A claim that finds nothing, or fails,
is left to the worker's own claim; a batch read ahead and not taken (the run ends) is
given back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .batch import BatchWork
from .events import BatchResult, WorkerEvent
from .io import close_connection
from .leases import Held

logger = logging.getLogger(__name__)

Write = Callable[[], BatchWork]
Outcome = Callable[[BatchWork], BatchResult]


@dataclass(frozen=True)
class Ahead:
    """A batch claimed ahead: its lease, held since the claim, and its (index, raw)
    records."""

    lease: Held
    records: list[tuple[int, dict[str, Any]]]


class WriteBehind:
    """One writer thread and the write it may have in hand, for one ``Worker.run``."""

    def __init__(self, name: str, emit: Callable[[WorkerEvent], None]) -> None:
        self._name = name
        self._emit = emit
        self._held: list[WorkerEvent] = []
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[BatchWork], Outcome] | None = None
        self._settled: list[BatchResult] = []
        self._ahead: Future[Ahead | None] | None = None

    @property
    def pending(self) -> bool:
        """Whether a write is handed over and not settled yet."""
        return self._pending is not None

    def submit(self, write: Write, outcome: Outcome) -> None:
        """Run ``write`` on the writer thread; ``outcome`` turns what it returned into the
        batch's result at the next ``settle``. The write before it must be settled."""
        if self._pending is not None:
            raise RuntimeError("a write is already behind: settle it first")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        self._pending = (self._pool.submit(write), outcome)

    def read_ahead(self, claim: Callable[[], Ahead | None]) -> None:
        """Run ``claim`` on the writer thread, after the write in hand; its batch is the
        next ``take_ahead``."""
        if self._ahead is not None:
            raise RuntimeError("a batch is already read ahead: take it first")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=self._name)
        self._ahead = self._pool.submit(claim)

    def take_ahead(self) -> Ahead | None:
        """The batch read ahead, once claimed and read; None if none was asked for, or the
        claim found nothing or failed (the worker then claims itself)."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        try:
            return ahead.result()
        except Exception:
            logger.warning("reading the next batch ahead failed; claiming it", exc_info=True)
            return None

    def hold(self, event: WorkerEvent) -> bool:
        """Keep ``event`` until the write behind is settled; False when none is."""
        if self._pending is None:
            return False
        self._held.append(event)
        return True

    def settle(self) -> None:
        """Wait for the write behind, if any, and keep its result for ``take``; what the
        write raised (the database gone, say) is raised here. The events held meanwhile
        are passed on after the batch's own."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        future, outcome = pending
        try:
            self._settled.append(outcome(future.result()))
        finally:
            self._pass_on_held()

    def _pass_on_held(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self._emit(event)

    def take(self) -> list[BatchResult]:
        """The results settled since the last call, oldest first."""
        settled, self._settled = self._settled, []
        return settled

    def close(self, store: object, give_back: Callable[[Ahead], None]) -> None:
        """Wait for the write behind (what it raised is logged: ``run`` is returning
        already), ``give_back`` a batch read ahead, and end the writer thread, closing
        its connection to ``store``."""
        ahead = self.take_ahead()
        if ahead is not None:
            give_back(ahead)
        pool, self._pool = self._pool, None
        pending, self._pending = self._pending, None
        if pending is not None:
            try:
                pending[0].result()
            except BaseException:
                logger.warning("the last batch's write failed as the run ended", exc_info=True)
        self._pass_on_held()
        if pool is None:
            return
        pool.submit(close_connection, store).result()
        pool.shutdown(wait=True)
