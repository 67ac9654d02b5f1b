"""Counting the statements a store runs, like peewee's ``assertQueryCount``.

Every statement a Peewee database runs for the store, whether built by the query builder
(``database.execute(query)``) or written as SQL text, passes through the database's
``execute_sql``. The helpers here replace that method on the one database instance (a
``DatabaseProxy`` is followed to the database it stands for, its ``.obj``), record each
statement's SQL, and put the method back afterwards. Statements that run on other threads
over the same database are recorded too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee as pw

#: The statements that write, the only ones ``assert_statements`` counts.
WRITE_KINDS = ("INSERT", "UPDATE", "DELETE")

#: ``hook(sql, params, run)``: ``run(sql, params)`` runs the statement for real.
Hook = Callable[[str, Any, Callable[[str, Any], Any]], Any]


def real_database(database: pw.Database | pw.DatabaseProxy) -> pw.Database:
    """``database`` itself, or the database a ``DatabaseProxy`` was initialized with."""
    if isinstance(database, pw.DatabaseProxy):
        target = database.obj
        if not isinstance(target, pw.Database):
            raise ValueError("the DatabaseProxy is not initialized")
        return target
    return database


@contextmanager
def intercept_statements(database: pw.Database | pw.DatabaseProxy, hook: Hook) -> Iterator[None]:
    """Route every ``execute_sql`` of ``database`` through ``hook`` while the block runs.

    Nests: an inner interception's ``run`` goes through the outer one.
    """
    target = real_database(database)
    own = vars(target)
    had_own = "execute_sql" in own
    saved: Any = own.get("execute_sql")
    previous: Callable[..., Any] = target.execute_sql

    def run(sql: str, params: Any = None) -> Any:
        return previous(sql, params)

    def execute_sql(sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # a form of the call this helper does not know: do not guess
            return previous(sql, params, *args, **kwargs)
        return hook(sql, params, run)

    target.execute_sql = execute_sql  # type: ignore[method-assign]
    try:
        yield
    finally:
        if had_own:
            target.execute_sql = saved  # type: ignore[method-assign]
        else:
            del target.execute_sql


def statement_kind(sql: str) -> str:
    """The statement's first keyword, upper-cased: ``SELECT``, ``UPDATE``, ``BEGIN``..."""
    words = sql.lstrip(" \t\r\n(").split(None, 1)
    return words[0].upper().rstrip(";") if words else ""


def writes(statements: Iterable[str], kind: str | None = None) -> list[str]:
    """The INSERT, UPDATE and DELETE statements of ``statements`` (only ``kind``, if given)."""
    kinds = WRITE_KINDS if kind is None else (kind.upper(),)
    return [sql for sql in statements if statement_kind(sql) in kinds]


@contextmanager
def count_statements(database: pw.Database | pw.DatabaseProxy) -> Iterator[list[str]]:
    """Yield a list that receives the SQL of every statement ``database`` runs in the block.

    Everything is recorded, reads and transaction control included (``BEGIN`` issued
    through the driver's cursor by Peewee itself is not, savepoints are): use ``writes``
    to keep the statements that change data.
    """
    statements: list[str] = []

    def record(sql: str, params: Any, run: Callable[[str, Any], Any]) -> Any:
        statements.append(sql)
        return run(sql, params)

    with intercept_statements(database, record):
        yield statements


@contextmanager
def assert_statements(
    database: pw.Database | pw.DatabaseProxy, expected: int, kind: str | None = None
) -> Iterator[list[str]]:
    """Fail unless the block runs exactly ``expected`` writing statements on ``database``.

    Only INSERT, UPDATE and DELETE statements count (with ``kind``, only statements of that
    kind): SELECTs (the database clock, the reads before a conditional write) and
    transaction control (BEGIN, COMMIT, SAVEPOINT, RELEASE) are ignored, since how many of
    those run depends on the backend and on whether the caller is in a transaction. The
    list yielded receives every statement, for the test to look at further.
    """
    with count_statements(database) as statements:
        yield statements
    counted = writes(statements, kind)
    what = f"{kind.upper()} statement(s)" if kind else "INSERT/UPDATE/DELETE statement(s)"
    listing = "\n".join(f"  {sql}" for sql in counted)
    assert len(counted) == expected, f"expected {expected} {what}, ran {len(counted)}:\n{listing}"
