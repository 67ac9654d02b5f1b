"""The store's one way to its database: transactions, bounded retries, the clock, and the
boundary where driver errors that trying again later may cure become ``StoreUnavailable``.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import peewee as pw

from ..errors import StoreUnavailable
from .dialects import Dialect

T = TypeVar("T")

MAX_ATTEMPTS = 8
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 1.0
_CLOCK_REFRESH_S = 30.0

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
    if isinstance(exc, StoreUnavailable) or not isinstance(exc, _OPERATIONAL):
        return exc
    error = StoreUnavailable(
        f"the database is unavailable after {attempts} attempt(s): {type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


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
            if self._offset_ms is None or now - self._read_at > _CLOCK_REFRESH_S:
                before = time.monotonic()
                cursor: Any = self._database.execute_sql(self._sql)  # type: ignore[no-untyped-call]
                server_ms = int(cursor.fetchone()[0])
                after = time.monotonic()
                self._offset_ms = server_ms - (before + after) / 2 * 1000
                self._read_at = after
                now = after
            return int(now * 1000 + self._offset_ms)


class Session:
    """Runs the store's operations against ``database`` as ``dialect`` says.

    ``clock`` is the caller's (epoch ms); None means the database server's (this machine's
    where the server has none to offer, as SQLite).
    """

    def __init__(self, database: pw.Database, dialect: Dialect, clock: Clock | None) -> None:
        self.database = database
        self.dialect = dialect
        self._clock = clock
        self._server_clock = DatabaseClock(database, dialect.now_sql) if dialect.now_sql else None

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

    def write(
        self, operation: Callable[[], T], *, landed: Callable[[], T | None] | None = None
    ) -> T:
        """Run ``operation`` in one write transaction, retried after transient errors.

        ``landed`` (for writes that are not idempotent) says, after a lost connection,
        whether the lost attempt committed unseen: its answer then stands.
        """
        return self._retrying(operation, transaction=True, landed=landed)

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
    ) -> T:
        """Run ``operation``, re-running it after transient errors, at most MAX_ATTEMPTS times.

        Retried: errors after which the database rolled the whole transaction back (SQLite
        busy, MySQL deadlock / lock wait timeout, PostgreSQL serialization failure /
        deadlock), and lost connections. After a lost connection a COMMIT may have landed
        unseen, so ``landed`` (when given) first checks whether it did; every other
        operation is idempotent (upserts keyed by job and record index, updates that set
        values). Inside a caller's own transaction nothing is retried: the caller's
        transaction is what failed. What still fails is raised through ``as_store_error``.
        """
        dialect = self.dialect
        nested = self.database.in_transaction()
        attempt, check_landed = 0, False
        while True:
            try:
                if check_landed and landed is not None:
                    outcome = landed()
                    if outcome is not None:
                        return outcome
                if not transaction:
                    return operation()
                with dialect.write_transaction():
                    return operation()
            except (pw.DatabaseError, pw.InterfaceError) as exc:
                if nested:
                    raise  # the caller's transaction failed: the caller decides
                attempt += 1
                disconnected = dialect.is_disconnect(exc)
                if disconnected:
                    self.drop_connection()  # the next call starts on a new connection
                    check_landed = True
                retriable = disconnected or dialect.is_transient(exc)
                stale = isinstance(exc, StaleStatement) and attempt == 1
                if attempt >= MAX_ATTEMPTS or not (retriable or stale):
                    error = as_store_error(exc, attempt)
                    if error is exc:
                        raise
                    raise error from exc
            time.sleep(backoff_delay(attempt))

    def drop_connection(self) -> None:
        """Forget this thread's dead connection; the next query opens a new one."""
        with contextlib.suppress(Exception):  # a dead connection may fail to close: it is gone
            self.database.close()
