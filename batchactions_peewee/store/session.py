"""The store's one way to its database: transactions, bounded retries, the clock, and the
boundary where driver errors that trying again later may cure become ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee as pw

from ..errors import StatementTooLarge, StoreUnavailable
from .dialects import Dialect

T = TypeVar("T")

MAX_ATTEMPTS = 8
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 1.0
_CLOCK_REFRESH_S = 30.0
#: Statements from this size on are weighed against the server's size limit before they
#: are sent; smaller ones only once the limit is known.
WEIGH_BYTES = 4 * 1024 * 1024
#: No server is set up to refuse statements smaller than this (MySQL 5.5's default limit).
_SMALLEST_LIMIT = 1024 * 1024

Clock = Callable[[], int]


class StaleStatement(pw.ProgrammingError):
    """A statement built once per store no longer fits its table; it has been dropped, and
    the write is run again (once) with one built afresh."""


#: Driver errors about the database's operation rather than the statement (as DB-API
#: defines them): what trying again later may cure.
_OPERATIONAL = (pw.OperationalError, pw.InterfaceError, pw.InternalError)


def as_store_error(exc: BaseException, attempts: int = 1) -> BaseException:
    """The boundary where driver errors become ours: ``exc`` as ``StoreUnavailable`` when
    it is about the database's operation, else ``exc`` itself."""
    if isinstance(exc, (StoreUnavailable, StatementTooLarge)) or not isinstance(exc, _OPERATIONAL):
        return exc
    return _unavailable(exc, attempts)


def _unavailable(exc: BaseException, attempts: int) -> StoreUnavailable:
    error = StoreUnavailable(
        f"the database is unavailable after {attempts} attempt(s): {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


def statement_too_large(
    size: int | None, limit: int | None, records: int | None
) -> StatementTooLarge:
    """The error for a statement of ``size`` bytes (``records`` records) that the server's
    ``max_allowed_packet`` of ``limit`` bytes refuses; None where not known."""
    what = f"a {_mib(size)} statement" if size else "a statement"
    if records:
        what += f" ({records} record{'' if records == 1 else 's'})"
    now = f" (now {_mib(limit)})" if limit else ""
    fewer = "" if records == 1 else ", or write fewer records at once (a smaller batch size)"
    fix = f"raise the server's max_allowed_packet{now} above that{fewer}"
    return StatementTooLarge(f"the database refuses {what}: {fix}")


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def backoff_delay(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1-based): exponential, capped, jittered."""
    ceiling = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


class DatabaseClock:
    """The database server's clock in epoch ms, read once and carried on a monotonic clock.

    Every worker measures lease ages against the server's clock, so workers on machines
    whose clocks disagree still agree on when a lease is stale. The offset is re-read every
    30 s; between reads a local clock step cannot move it (monotonic base).
    """

    def __init__(self, database: pw.Database, sql: str) -> None:
        self._database = database
        self._sql = sql
        self._lock = threading.Lock()
        self._offset_ms: float | None = None
        self._read_at = 0.0

    def __call__(self) -> int:
        now = time.monotonic()
        with self._lock:
            offset = self._offset_ms
            if offset is not None and now - self._read_at <= _CLOCK_REFRESH_S:
                return int(now * 1000 + offset)
        # The query runs outside the lock: under pwasyncio's greenlets every task shares this
        # thread, and a task waiting on the lock would block the one holding it. Two readers
        # at once both read the server's clock; either offset is right.
        before = time.monotonic()
        cursor: Any = self._database.execute_sql(self._sql)  # type: ignore[no-untyped-call]
        server_ms = int(cursor.fetchone()[0])
        after = time.monotonic()
        offset = server_ms - (before + after) / 2 * 1000
        with self._lock:
            self._offset_ms, self._read_at = offset, after
        return int(after * 1000 + offset)


@dataclass(frozen=True)
class Waits:
    """How a session waits between attempts, and the driver errors it knows besides
    Peewee's: threads by default; a greenlet-aware sleep under ``playhouse.pwasyncio``,
    whose asyncpg errors Peewee does not always translate."""

    sleep: Callable[[float], None] = time.sleep
    driver_errors: tuple[type[Exception], ...] = ()


THREADS = Waits()

#: The statement in flight in this thread or task: (bytes, records, limit). A context
#: variable, since pwasyncio's tasks share one thread.
_sending: ContextVar[tuple[int, int, int | None] | None] = ContextVar(
    "batchactions_sending", default=None
)


class Session:
    """Runs the store's operations against ``database`` as ``dialect`` says.

    ``clock`` is the caller's (epoch ms); None means the database server's (this machine's
    where the server has none to offer, as SQLite). ``waits`` says how to wait between
    attempts.
    """

    def __init__(
        self, database: pw.Database, dialect: Dialect, clock: Clock | None, waits: Waits = THREADS
    ) -> None:
        self.database = database
        self.dialect = dialect
        self.waits = waits
        self._clock = clock
        self._server_clock = DatabaseClock(database, dialect.now_sql) if dialect.now_sql else None
        self._errors: tuple[type[Exception], ...] = (
            pw.DatabaseError,
            pw.InterfaceError,
            *waits.driver_errors,
        )

    def now(self) -> int:
        """The store's clock in epoch ms."""
        if self._clock is not None:
            return int(self._clock())
        if self._server_clock is None:
            return int(time.time() * 1000)
        # A query: a lost connection is retried like any read (inside a transaction the
        # error goes up, and the caller's retry re-runs the whole write).
        return self.run(self._server_clock)

    def rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one statement, straight from the driver's cursor."""
        cursor: Any = self.database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        return list(cursor.fetchall())

    def exists(self, sql: str, params: Sequence[Any]) -> bool:
        """True when the statement returns a row."""
        cursor: Any = self.database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        return cursor.fetchone() is not None

    def changed(self, sql: str, params: Sequence[Any]) -> int:
        """The row count of one UPDATE: what decides every "only one wins"."""
        cursor: Any = self.database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        return int(cursor.rowcount)

    def check_size(self, size: int, records: int) -> None:
        """Before a statement of ``size`` bytes carrying ``records`` records is sent: raise
        ``StatementTooLarge`` if the server's limit refuses it (nothing is sent then). The
        limit is asked for (once per connection) only from ``WEIGH_BYTES`` on."""
        limit = self.dialect.packet_limit(ask=size >= WEIGH_BYTES)
        _sending.set((size, records, limit))
        if limit is not None and size > limit:
            raise statement_too_large(size, limit, records)

    def _too_large(self, exc: BaseException) -> StatementTooLarge | None:
        """After ``exc`` lost the connection: StatementTooLarge if the server refused the
        statement in flight for its size, which it says (MySQL 1153) or shows by closing
        the connection on a statement larger than its limit, asked on a new connection.
        None for a connection lost for another reason."""
        refused = self.dialect.refuses_packet(exc)
        sending = _sending.get()
        size, records, limit = sending if sending is not None else (None, None, None)
        if not refused and (size is None or size < _SMALLEST_LIMIT):
            return None  # no statement of ours a server would refuse was in flight
        self.dialect.forget_packet_limit()  # the next connection may have another
        if limit is None or not refused:
            with contextlib.suppress(pw.DatabaseError, pw.InterfaceError):
                limit = self.dialect.packet_limit()  # a server still down answers nothing
        if refused or (size is not None and limit is not None and size > limit):
            return statement_too_large(size, limit, records)
        return None

    def write(
        self,
        operation: Callable[[], T],
        *,
        landed: Callable[[], T | None] | None = None,
        lock_first: bool = True,
    ) -> T:
        """Run ``operation`` in one write transaction, retried after transient errors.

        ``landed`` (for writes that are not idempotent) says, after a lost connection,
        whether the lost attempt committed unseen: its answer then stands. Not
        ``lock_first``: SQLite's write lock is taken at the first write, not at BEGIN.
        """
        return self._retrying(operation, transaction=True, landed=landed, lock_first=lock_first)

    def run(self, operation: Callable[[], T], *, landed: Callable[[], T | None] | None = None) -> T:
        """``write`` without a transaction of its own (one statement, or a caller's)."""
        return self._retrying(operation, transaction=False, landed=landed)

    def read(self, operation: Callable[[], T]) -> T:
        """Run several reads in one transaction, so they see one consistent state."""

        def in_transaction() -> T:
            with self.database.atomic():
                return operation()

        return self._retrying(in_transaction, transaction=False, landed=None)

    def _retrying(
        self,
        operation: Callable[[], T],
        *,
        transaction: bool,
        landed: Callable[[], T | None] | None,
        lock_first: bool = True,
    ) -> T:
        """Run ``operation``, re-running it after transient errors, at most MAX_ATTEMPTS times.

        Retried: errors after which the database rolled the whole transaction back (SQLite
        busy, MySQL deadlock / lock wait timeout, PostgreSQL serialization failure /
        deadlock), and lost connections. After a lost connection a COMMIT may have landed
        unseen, so ``landed`` (when given) first checks whether it did; every other
        operation is idempotent (upserts keyed by job and record index, updates that set
        values). Inside a caller's own transaction nothing is retried: the caller's
        transaction is what failed. A statement the server refuses for its size is not
        retried either: ``StatementTooLarge``. What still fails is raised through
        ``as_store_error``.
        """
        dialect = self.dialect
        nested = self.database.in_transaction()
        attempt, check_landed = 0, False
        while True:
            _sending.set(None)
            try:
                if check_landed and landed is not None:
                    outcome = landed()
                    if outcome is not None:
                        return outcome
                if not transaction:
                    return operation()
                with dialect.write_transaction(lock_first):
                    return operation()
            except self._errors as exc:
                if isinstance(exc, StatementTooLarge):
                    raise  # refused before it was sent: trying again cannot help
                if nested:
                    raise  # the caller's transaction failed: the caller decides
                attempt += 1
                disconnected = dialect.is_disconnect(exc)
                if disconnected or dialect.refuses_packet(exc):
                    self.drop_connection()  # the next call starts on a new connection
                    too_large = self._too_large(exc)
                    if too_large is not None:
                        raise too_large from exc  # it would be refused again
                    check_landed = True
                retriable = disconnected or dialect.is_transient(exc)
                stale = isinstance(exc, StaleStatement) and attempt == 1
                if attempt >= MAX_ATTEMPTS or not (retriable or stale):
                    error = as_store_error(exc, attempt)
                    if error is exc and retriable:  # a driver error Peewee left as it was
                        error = _unavailable(exc, attempt)
                    if error is exc:
                        raise
                    raise error from exc
            self.waits.sleep(backoff_delay(attempt))

    def drop_connection(self) -> None:
        """Forget this thread's dead connection; the next query opens a new one."""
        with contextlib.suppress(Exception):  # a dead connection may fail to close: it is gone
            self.database.close()
