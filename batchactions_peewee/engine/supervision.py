"""Workers under a supervisor (systemd, Kubernetes, Celery): stop signals, the parent's
death, and the worker ids of a pool.

SIGTERM asks a worker to finish the record in hand and give its batch back (``Worker.drain``); a
second stop signal ends the process at once with 128 + its number (``EXIT_SIGTERM``,
``EXIT_SIGINT``). A worker child ends when its parent dies: Linux's ``PR_SET_PDEATHSIG``
sends it SIGTERM, and a thread watching the parent's pid does the same elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ..checks import check_worker_id

#: Exit codes of a second stop signal, the shell's convention (128 + the signal's number).
EXIT_SIGINT = 128 + signal.SIGINT
EXIT_SIGTERM = 128 + signal.SIGTERM

_PR_SET_PDEATHSIG = 1
PARENT_POLL_S = 0.5

logger = logging.getLogger(__name__)


def pool_worker_ids(worker_id: str | None, count: int) -> list[str | None]:
    """The ids of ``count`` workers named ``worker_id``: itself for one, ``ID-1`` ..
    ``ID-N`` for more; None (each picks its own) without one. Raises InvalidIdentifierError
    for an id that is empty or, derived, longer than 128 characters."""
    if worker_id is None:
        return [None] * count
    check_worker_id(worker_id)
    if count == 1:
        return [worker_id]
    return [check_worker_id(f"{worker_id}-{n}") for n in range(1, count + 1)]


class SignalRelay:
    """SIGTERM and SIGINT, in the main thread, passed to ``on_signal(signum)`` until
    ``restore`` (only where handlers can be set: run from another thread, the defaults
    stay)."""

    def __init__(self, on_signal: Callable[[int], object]) -> None:
        self._old: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._old[signum] = signal.signal(signum, lambda n, _f: on_signal(n))

    def restore(self) -> None:
        for signum, handler in self._old.items():
            signal.signal(signum, handler)


def die_with_parent(parent: int, on_orphaned: Callable[[], object]) -> None:
    """In a worker child of process ``parent``: be sent SIGTERM when it dies (Linux), and
    call ``on_orphaned`` from a watching thread once the parent's pid is another (on every
    system; this also covers a parent that died before ``prctl`` took effect)."""
    _set_pdeathsig(signal.SIGTERM)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        logger.warning("the parent process %d is gone; the worker stops", parent)
        on_orphaned()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _set_pdeathsig(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)``; False where there is no such call."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        logger.debug("no prctl: the parent watch alone ends an orphaned worker", exc_info=True)
        return False
