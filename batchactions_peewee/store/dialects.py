"""What differs per database, as capability attributes of one class per kind.

A store resolves its dialect once (``dialect_for``) and asks it: about transactions,
transient and lost-connection errors, parameter limits, the clock, locking and the forms of
its statements. Nothing else in the package branches on the kind of database.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from typing import Any, ClassVar

import peewee as pw

from ..errors import InvalidInputError

MYSQL_TRANSIENT = {1205, 1213}  # lock wait timeout, deadlock: the transaction was rolled back
POSTGRES_TRANSIENT = {"40001", "40P01"}  # serialization failure, deadlock detected
# A packet bigger than max_allowed_packet; a result that would be: trying again cannot help.
MYSQL_PACKET_REFUSED = {1153, 1301}
# Server gone away, lost connection (x2), killed, shutting down, idle-disconnected; cannot
# connect (socket, TCP): nothing was sent, so retrying is safe.
MYSQL_DISCONNECT = {2006, 2013, 2055, 1927, 1053, 4031, 2002, 2003}
# admin shutdown (pg_terminate_backend), crash/cannot connect now, connection exceptions.
POSTGRES_DISCONNECT = {"57P01", "57P02", "57P03", "08000", "08001", "08003", "08004", "08006"}
_POSTGRES_DISCONNECT_WORDS = (
    "server closed the connection",
    "connection already closed",
    "terminating connection",
    "could not connect",
    "connection not open",
    "no connection to the server",
    "ssl connection has been closed",
    # libpq >= 14 words a failed connect 'connection to server at "h", port p failed: ...'
    "connection to server",
    "connection refused",
)


class Dialect:
    """Defaults shared by every database; subclasses override what differs."""

    #: A label for messages and logs; never branch on it.
    name: ClassVar[str] = "generic"
    #: Bind parameters one statement may carry.
    max_params: ClassVar[int] = 999
    #: SQL giving the server's time in epoch milliseconds.
    now_sql: ClassVar[str | None] = None
    #: One writer at a time (SQLite's database lock): a write transaction cannot be raced.
    single_writer: ClassVar[bool] = False
    #: ``SELECT ... FOR UPDATE`` locks rows (a single writer needs no row locks).
    row_locks: ClassVar[bool] = True
    #: An UPDATE's row count is the rows it changed, not the rows it matched (MySQL), so a
    #: deciding UPDATE must always change a value of the row it matches.
    counts_changed_rows: ClassVar[bool] = False
    #: ``INSERT ... ON CONFLICT (columns)`` names its conflict target; MySQL's ``ON
    #: DUPLICATE KEY UPDATE`` takes none.
    upsert_names_target: ClassVar[bool] = True
    #: From this many rows on, the records upsert is one row of column arrays (unnest)
    #: instead of a VALUES list; None where the server has no such form.
    unnest_min_rows: ClassVar[int | None] = None
    #: ``DELETE ... LIMIT n`` exists (MySQL); elsewhere a bounded delete selects its rows.
    delete_limit: ClassVar[bool] = False
    #: The column type of JSON text and whether it may carry a default.
    json_text_type: ClassVar[str] = "TEXT"
    json_text_defaults: ClassVar[bool] = True
    #: The server refuses statements above a size of its own (``packet_limit``).
    packet_limited: ClassVar[bool] = False

    def __init__(self, database: pw.Database) -> None:
        self.database = database

    @contextlib.contextmanager
    def write_transaction(self, lock_first: bool = True) -> Iterator[None]:
        """A transaction that will write. SQLite takes the write lock up front, unless not
        ``lock_first`` (then at the transaction's first write)."""
        with self.database.atomic():
            yield

    def table_settings(self) -> list[str]:
        """Table options for CREATE TABLE."""
        return []

    def is_transient(self, exc: BaseException) -> bool:
        """True when ``exc`` means the transaction was rolled back and may simply be re-run."""
        return False

    def is_disconnect(self, exc: BaseException) -> bool:
        """True when ``exc`` means the connection is gone. Whether a COMMIT in flight landed
        is then unknown: callers re-run only writes that are idempotent or verifiable."""
        return False

    def packet_limit(self, *, ask: bool = True) -> int | None:
        """The largest statement the server accepts, in bytes; None where it has no limit
        of its own, or (``ask=False``) where it has not been asked yet."""
        return None

    def forget_packet_limit(self) -> None:
        """Read ``packet_limit`` again next time (a new connection may have another)."""

    def refuses_packet(self, exc: BaseException) -> bool:
        """True when ``exc`` means the server refused a statement for its size."""
        return False

    def supports_skip_locked(self) -> bool:
        """``SELECT ... FOR UPDATE SKIP LOCKED`` is available on this server."""
        return False

    def json_table_rows(self) -> bool:
        """A bulk write may send its rows as one JSON document that ``JSON_TABLE`` turns
        back into rows on the server (see ``Records._json_table_statement``)."""
        return False

    def column_types(self, table: str) -> dict[str, str]:
        """Each column of ``table`` with its SQL type (empty where nobody needs them)."""
        return {}

    def indexes(self, table: str) -> list[tuple[str, list[str]]]:
        """Each index of ``table``: its name and its columns, in order."""
        return [(i.name, list(i.columns)) for i in self.database.get_indexes(table)]

    def transaction_id(self) -> object:
        """An id of the current transaction the server can later say was committed or not
        (None where it cannot)."""
        return None

    def committed(self, transaction: object) -> bool | None:
        """Whether ``transaction`` committed; None when the server cannot tell."""
        return None


class SqliteDialect(Dialect):
    name = "sqlite"
    max_params = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
    single_writer = True
    row_locks = False  # the write lock is already held (BEGIN IMMEDIATE)

    @contextlib.contextmanager
    def write_transaction(self, lock_first: bool = True) -> Iterator[None]:
        # BEGIN IMMEDIATE: a deferred transaction that reads and then writes fails with
        # "database is locked" when another writer got in between; taking the lock first
        # turns that into an orderly wait (busy timeout) or a retryable busy error. Not
        # ``lock_first`` (a batch processor's transaction, which holds the one write lock
        # from its first write to the commit): BEGIN DEFERRED, so that what the processor
        # does before its first write runs while other workers write; a first statement
        # that writes waits for the lock as IMMEDIATE would, and a read before it may make
        # the write fail busy: the whole transaction is then run again.
        if self.database.in_transaction() or not lock_first:
            with self.database.atomic():
                yield
        else:
            with self.database.atomic("IMMEDIATE"):
                yield

    def is_transient(self, exc: BaseException) -> bool:
        return any(
            "database is locked" in str(e).lower() or "database is busy" in str(e).lower()
            for e in _chain(exc)
            if isinstance(e, (pw.OperationalError, sqlite3.OperationalError))
        )


class MySQLDialect(Dialect):
    name = "mysql"
    max_params = 65535
    counts_changed_rows = True
    upsert_names_target = False
    delete_limit = True  # and no LIMIT in an IN subquery
    # LONGTEXT holds 4 GiB (TEXT only 64 KiB); MySQL before 8.0.13 allows no text defaults.
    json_text_type = "LONGTEXT"
    json_text_defaults = False
    # UTC_TIMESTAMP does not depend on the session time zone.
    now_sql = "SELECT TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000"
    packet_limited = True

    def __init__(self, database: pw.Database) -> None:
        super().__init__(database)
        self._packet_limit: int | None = None

    def table_settings(self) -> list[str]:
        # utf8mb4 for full Unicode; a binary NO PAD collation so ids compare exactly
        # ("a" != "A" and "a" != "a "). utf8mb4_bin pads, so it is the last resort.
        open_connection(self.database)
        version = self.database.server_version or (0,)
        if version >= (10,):
            collation = "utf8mb4_nopad_bin" if version >= (10, 2) else "utf8mb4_bin"
        else:
            collation = "utf8mb4_0900_bin" if version >= (8, 0, 17) else "utf8mb4_bin"
        return ["ENGINE=InnoDB", "DEFAULT CHARSET=utf8mb4", f"COLLATE={collation}"]

    def is_transient(self, exc: BaseException) -> bool:
        return any(code in MYSQL_TRANSIENT for code in _driver_codes(exc))

    def is_disconnect(self, exc: BaseException) -> bool:
        if any(code in MYSQL_DISCONNECT for code in _driver_codes(exc)):
            return True
        # PyMySQL raises InterfaceError(0, "") for any use of a connection it knows is closed.
        return any(type(e).__name__ == "InterfaceError" and e.args[:1] == (0,) for e in _chain(exc))

    def packet_limit(self, *, ask: bool = True) -> int | None:
        if self._packet_limit is None and ask:  # the session's value, fixed when it connected
            cursor: Any = self.database.execute_sql("SELECT @@max_allowed_packet")  # type: ignore[no-untyped-call]
            self._packet_limit = int(cursor.fetchone()[0])
        return self._packet_limit

    def forget_packet_limit(self) -> None:
        self._packet_limit = None

    def refuses_packet(self, exc: BaseException) -> bool:
        return any(code in MYSQL_PACKET_REFUSED for code in _driver_codes(exc))

    def supports_skip_locked(self) -> bool:
        version = self.database.server_version or (0,)
        is_mariadb = version >= (10,)
        return version >= ((10, 6) if is_mariadb else (8, 0, 1))

    def json_table_rows(self) -> bool:
        # MariaDB from 10.6, whose JSON_TABLE is tested here; MySQL 8 keeps the VALUES list.
        version = self.database.server_version or (0,)
        return version >= (10, 6)


class PostgresDialect(Dialect):
    name = "postgres"
    max_params = 65535
    # Below this, the arrays' casts cost more than the VALUES list they spare.
    unnest_min_rows = 16
    now_sql = "SELECT FLOOR(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint"

    def is_transient(self, exc: BaseException) -> bool:
        return any(code in POSTGRES_TRANSIENT for code in _driver_codes(exc))

    def is_disconnect(self, exc: BaseException) -> bool:
        if any(code in POSTGRES_DISCONNECT for code in _driver_codes(exc)):
            return True
        return any(
            type(e).__name__ in ("OperationalError", "InterfaceError")
            and any(w in str(e).lower() for w in _POSTGRES_DISCONNECT_WORDS)
            for e in _chain(exc)
        )

    def supports_skip_locked(self) -> bool:
        return True

    def column_types(self, table: str) -> dict[str, str]:
        """Each column of ``table`` (found through the search path, as a statement would
        find it) with its SQL type: the TypeScript adapters' tables may hold JSON as jsonb."""
        cursor: Any = self.database.execute_sql(  # type: ignore[no-untyped-call]
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (f'"{table}"',),
        )
        return {name: kind for name, kind in cursor.fetchall()}

    def indexes(self, table: str) -> list[tuple[str, list[str]]]:
        # Not Peewee's get_indexes, whose relkind parameter asyncpg refuses as text.
        cursor: Any = self.database.execute_sql(  # type: ignore[no-untyped-call]
            "SELECT i.relname, ARRAY(SELECT pg_get_indexdef(x.indexrelid, k + 1, TRUE) "
            "FROM generate_subscripts(x.indkey, 1) AS k ORDER BY k) "
            "FROM pg_index AS x JOIN pg_class AS i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = to_regclass(%s) ORDER BY i.relname",
            (f'"{table}"',),
        )
        return [(name, [c.strip('"') for c in columns]) for name, columns in cursor.fetchall()]

    def transaction_id(self) -> object:
        cursor: Any = self.database.execute_sql("SELECT txid_current()")  # type: ignore[no-untyped-call]
        return int(cursor.fetchone()[0])

    def committed(self, transaction: object) -> bool | None:
        if not isinstance(transaction, int):
            return None
        cursor: Any = self.database.execute_sql(  # type: ignore[no-untyped-call]
            "SELECT txid_status(%s)", (transaction,)
        )
        return {"committed": True, "aborted": False}.get(cursor.fetchone()[0])


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions behind it. Peewee re-raises driver errors with the driver's
    exception as context, and a failed rollback hides the original error the same way."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend((e.__cause__, e.__context__))
        todo.extend(a for a in e.args[:1] if isinstance(a, BaseException))


def _driver_codes(exc: BaseException) -> Iterator[object]:
    """Every driver error code found behind ``exc``: MySQL errno or SQLSTATE."""
    for e in _chain(exc):
        for attribute in ("pgcode", "sqlstate"):
            code = getattr(e, attribute, None)
            if code:
                yield code
        if e.args and isinstance(e.args[0], int):
            yield e.args[0]


def open_connection(database: pw.Database) -> None:
    """Connect unless connected. Not ``connect(reuse_if_open=True)``: pwasyncio's
    ``connect()`` takes no arguments (it always reuses the task's connection)."""
    if database.is_closed():
        database.connect()


def check_database(database: object) -> pw.Database | pw.DatabaseProxy:
    """``database`` if it is a peewee Database or DatabaseProxy, else InvalidInputError."""
    if not isinstance(database, (pw.Database, pw.DatabaseProxy)):
        kind = type(database).__name__
        raise InvalidInputError(f"database must be a peewee Database or DatabaseProxy: {kind}")
    return database


def unwrap(database: pw.Database | pw.DatabaseProxy) -> pw.Database:
    """The real database behind a ``DatabaseProxy`` (which must be initialized by now)."""
    while isinstance(database, pw.DatabaseProxy):
        if database.obj is None:
            raise pw.InterfaceError("the DatabaseProxy is not initialized yet")
        database = database.obj
    return database


def dialect_for(database: pw.Database | pw.DatabaseProxy) -> Dialect:
    """The dialect of ``database`` (unwrapped from any proxy), resolved once per store."""
    real = unwrap(database)
    if isinstance(real, pw.SqliteDatabase):
        return SqliteDialect(real)
    if isinstance(real, pw.MySQLDatabase):
        return MySQLDialect(real)
    if isinstance(real, pw.PostgresqlDatabase):
        return PostgresDialect(real)
    return Dialect(real)
