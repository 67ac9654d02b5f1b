"""Leases: one daemon thread per worker renews every reservation it holds."""

from __future__ import annotations

import logging
import threading
import time

from ..logfields import log_fields
from ..model import BatchReservation
from ..ports import WorkerStore
from .io import close_connection

logger = logging.getLogger(__name__)


class Held:
    """One reservation that ``Leases`` renews through ``store`` every ``interval_s``;
    ``lost`` is set once a renewal is refused."""

    __slots__ = ("due", "interval_s", "lost", "reservation", "store")

    def __init__(self, reservation: BatchReservation, store: WorkerStore, interval_s: float):
        self.reservation = reservation
        self.store = store
        self.interval_s = interval_s
        self.due = time.monotonic() + interval_s
        self.lost = threading.Event()


class Leases:
    """Renews the reservations a worker holds from one daemon thread.

    The thread is started with the first reservation and lives until ``close`` (``run``
    keeps it for the whole job, sparing a thread start and join per batch). A renewal that
    raises (say, the database is briefly unreachable) is
    logged and tried again next interval; one that is refused (the batch was reclaimed)
    sets the reservation's ``lost``. Should the thread die (a renewal raised a
    BaseException), what it held counts as lost and the next ``hold`` starts a new thread.
    A renewal may still be in flight when its batch is released or completed: it is fenced
    by the reservation's version, so it then changes nothing.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._changed = threading.Condition()
        self._held: list[Held] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def lose_all(self) -> None:
        """Mark every reservation held now as lost: its batch is given up (``drain``)."""
        with self._changed:
            for held in self._held:
                held.lost.set()

    def hold(self, reservation: BatchReservation, store: WorkerStore, interval_s: float) -> Held:
        """Renew ``reservation`` through ``store`` every ``interval_s`` until released."""
        held = Held(reservation, store, interval_s)
        with self._changed:
            self._held.append(held)
            if self._thread is None or not self._thread.is_alive():
                stop = threading.Event()
                thread = threading.Thread(
                    target=self._renew, args=(stop,), name=self._name, daemon=True
                )
                try:
                    thread.start()
                except BaseException:
                    self._held.remove(held)
                    raise
                self._thread, self._stop = thread, stop
            self._changed.notify_all()
        return held

    def release(self, held: Held) -> None:
        with self._changed:
            if held in self._held:  # a lost reservation is dropped by the thread
                self._held.remove(held)

    def close(self) -> None:
        """Stop the thread (and close its connections) unless a reservation is still held."""
        with self._changed:
            if self._held or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._stop.set()
            self._changed.notify_all()
        thread.join()

    def _renew(self, stop: threading.Event) -> None:
        stores: list[WorkerStore] = []  # whose connections this thread may have opened
        try:
            with self._changed:
                while not stop.is_set():
                    now = time.monotonic()
                    due = [h for h in self._held if h.due <= now]
                    if not due:
                        next_due = min((h.due for h in self._held), default=None)
                        self._changed.wait(None if next_due is None else next_due - now)
                        continue
                    for held in due:
                        held.due = now + held.interval_s
                        if not any(held.store is s for s in stores):
                            stores.append(held.store)
                    self._changed.release()  # the database calls run without the lock
                    try:
                        lost = [held for held in due if not _renew_one(held)]
                    finally:
                        self._changed.acquire()
                    self._held = [h for h in self._held if h not in lost]
        finally:
            with self._changed:
                if self._thread is threading.current_thread() and not stop.is_set():
                    # Died (a renewal raised a BaseException): nobody renews what is held
                    # now, so it counts as lost; the next hold() starts a new thread.
                    self._thread = None
                    for held in self._held:
                        held.lost.set()
                    self._held = []
            for store in stores:
                close_connection(store)


def _renew_one(held: Held) -> bool:
    """Renew one reservation; False once it is lost (the batch was reclaimed)."""
    try:
        renewed = held.store.heartbeat(held.reservation)
    except Exception:
        res = held.reservation
        logger.warning(
            "lease renewal failed; trying again",
            exc_info=True,
            extra=log_fields(res.job_id, res.batch_id, res.worker_id),
        )
        return True
    if not renewed:
        held.lost.set()
    return renewed
