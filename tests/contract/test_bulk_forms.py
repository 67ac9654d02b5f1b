"""A bulk write stores every value as given, whichever statement form carries it.

PostgreSQL's upsert of 16 rows or more sends each column as one text, its values joined by
a control character and split on the server; a value that could not be told apart after
the split (one holding the separator or equal to the NULL mark) must take the array form
instead. MariaDB (10.6 on) sends the rows as one JSON document for JSON_TABLE, except for
statements of several MiB. Each test catches a value a form would change: split in two,
read as NULL, cut or lost, or a large statement sent in the form that may be larger. SQLite
and older MySQL servers take the VALUES list.
"""

from __future__ import annotations

from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import PeeweeStateStore, ProcessedRecord

from ..support.factories import job
from ..support.statement_count import intercept_statements

ROWS = 20  # above PostgreSQL's unnest threshold (16)


def _records(error: str | None, text: str) -> list[ProcessedRecord]:
    records = []
    for i in range(ROWS):
        raw = {"n": i, "text": text, "sep": "a\x1fb", "null": "\x1e"}
        failed = i % 3 == 0
        records.append(
            ProcessedRecord(
                index=i,
                raw=raw,
                parsed=raw if i % 2 else {"n": str(i), "text": text},
                status="failed" if failed else "processed",
                processing_error=error if failed else None,
            )
        )
    return records


def _saved(store: PeeweeStateStore, records: list[ProcessedRecord]) -> tuple[Any, list[str]]:
    j = job(batches=1, per_batch=ROWS)
    store.save_job_state(j)
    statements: list[str] = []

    def seen(sql: str, params: Any, run: Any) -> Any:
        statements.append(sql)
        return run(sql, params)

    with intercept_statements(store.database, seen):
        store.save_batch_records(j.id, j.batches[0].id, records)
    return store.get_batch_records(j.id, j.batches[0].id), statements


@pytest.mark.parametrize(
    "error",
    [
        "plain",
        "tab\tand\nnewline",
        "unit\x1fseparator",  # would split into two values
        "\x1e",  # the NULL mark itself: would be read as NULL
        "",  # an empty text: kept between separators (alone, it would split into none)
    ],
)
def test_every_value_reads_back_as_written(peewee_store: PeeweeStateStore, error: str) -> None:
    records = _records(error, "zoë \u2028 \\ \" '")
    stored, statements = _saved(peewee_store, records)
    assert stored == records
    joined = any("string_to_array" in sql for sql in statements)
    if isinstance(peewee_store.database, pw.PostgresqlDatabase):
        # Raw JSON escapes control characters, so only the free text decides the form.
        assert joined == ("\x1f" not in error and error != "\x1e")
    else:
        assert not joined
    assert _json_table(statements) == _has_json_table(peewee_store)


def _json_table(statements: list[str]) -> bool:
    return any("JSON_TABLE" in sql for sql in statements)


def _has_json_table(store: PeeweeStateStore) -> bool:
    """MariaDB from 10.6 takes the JSON document form."""
    database = store.database
    if not isinstance(database, pw.MySQLDatabase):
        return False
    database.connect(reuse_if_open=True)
    return (database.server_version or (0,)) >= (10, 6)


def test_values_in_every_column_survive_the_joined_form(peewee_store: PeeweeStateStore) -> None:
    """Texts in the job, batch, status and error columns, ints in the index column and
    NULLs in parsed (equal to raw) and processingError: all as written."""
    records = _records(None, "x" * 3000)
    stored, _ = _saved(peewee_store, records)
    assert stored == records
    assert [r.processing_error for r in stored] == [None] * ROWS


def test_a_large_write_keeps_the_values_list(peewee_store: PeeweeStateStore) -> None:
    """Catches a statement of several MiB sent as a JSON document, whose escapes may make
    it larger than the VALUES list that a server's size limit was weighed against."""
    records = _records("e", '"q" ' * 50_000)  # 20 rows of 350 KB, quotes throughout
    stored, statements = _saved(peewee_store, records)
    assert stored == records
    assert not _json_table(statements)
    small, statements = _saved(peewee_store, _records("e", '"q" ' * 100))
    assert small == _records("e", '"q" ' * 100)
    assert _json_table(statements) == _has_json_table(peewee_store)
