"""A user's table that batch processors import into, its counts, and the records' schema.

The table has no unique key, so a record imported twice leaves two rows: a duplicate is
counted, never refused. ``importer`` is the batch processor of the tests: it inserts one row
per record it is given, through ``context.database``, as the README shows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import peewee as pw
import pydantic

from batchactions_peewee import BatchContext


class Numbered(pydantic.BaseModel):
    """What a valid record is: ``{"n": <integer>}``."""

    n: int


class Imported(pw.Model):
    """One imported record: its ``n`` and the batch that wrote it."""

    n = pw.IntegerField()
    batch_index = pw.IntegerField()


def imported_table(name: str) -> type[Imported]:
    """``Imported`` under the table name ``name`` (one per test: servers are shared)."""

    class Named(Imported):
        class Meta:
            table_name = name

    return Named


@contextmanager
def user_table(database: pw.Database | pw.DatabaseProxy, name: str) -> Iterator[type[Imported]]:
    """``imported_table(name)``, created on ``database`` and dropped afterwards."""
    table = imported_table(name)
    with database.bind_ctx([table]):
        table.create_table()
    try:
        yield table
    finally:
        with database.bind_ctx([table]):
            table.drop_table()


def importer(
    table: type[Imported],
    then: Callable[[list[dict[str, Any]], BatchContext], object] | None = None,
) -> Callable[[list[dict[str, Any]], BatchContext], Any]:
    """A batch processor that inserts one row per record into ``table``, then calls
    ``then(records, context)`` (which may raise) and answers what it returns."""

    def import_rows(records: list[dict[str, Any]], context: BatchContext) -> Any:
        rows = [{"n": r["n"], "batch_index": context.batch_index} for r in records]
        with context.database.bind_ctx([table]):
            table.insert_many(rows).execute()
        return None if then is None else then(records, context)

    return import_rows


def counts(database: pw.Database | pw.DatabaseProxy, table: type[Imported]) -> tuple[int, int]:
    """(rows, distinct record numbers) of ``table``: equal when nothing was imported twice."""
    with database.bind_ctx([table]):
        query: Any = table.select(pw.fn.COUNT(table.n), pw.fn.COUNT(table.n.distinct()))
        rows, distinct = query.tuples().get()
    return int(rows), int(distinct)
