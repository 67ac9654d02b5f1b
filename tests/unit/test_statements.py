"""The deciding statements, rendered per dialect, match their snapshots.

A change to a statement that decides who wins must show up as a diff of
``tests/unit/snapshots/statements-<dialect>.sql``: regenerate them with
``BATCHACTIONS_UPDATE_SNAPSHOTS=1 bash scripts/test tests/unit/test_statements.py`` and read the
diff before committing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import peewee as pw
import pytest

from batchactions_peewee.store.statements import TEMPLATES, Statements

SNAPSHOTS = Path(__file__).with_name("snapshots")
OFFLINE: dict[str, Callable[[], pw.Database]] = {
    "sqlite": lambda: pw.SqliteDatabase(None),
    "mysql": lambda: pw.MySQLDatabase(None),
    "postgres": lambda: pw.PostgresqlDatabase(None),
}


def rendered(dialect: str, prefix: str = "batchactions_") -> str:
    statements = Statements.for_database(OFFLINE[dialect](), prefix)
    return "".join(f"-- {name}\n{getattr(statements, name)};\n\n" for name in TEMPLATES)


@pytest.mark.parametrize("dialect", sorted(OFFLINE))
def test_the_deciding_statements_render_as_their_snapshot(dialect: str) -> None:
    path = SNAPSHOTS / f"statements-{dialect}.sql"
    text = rendered(dialect)
    if os.environ.get("BATCHACTIONS_UPDATE_SNAPSHOTS") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_every_statement_is_a_field_and_names_only_the_prefixed_tables() -> None:
    statements = Statements.for_database(pw.SqliteDatabase(None), "p_")
    assert set(TEMPLATES) == {f.name for f in Statements.__dataclass_fields__.values()}
    for name in TEMPLATES:
        sql = getattr(statements, name)
        assert "{" not in sql and "}" not in sql, f"{name} left a placeholder: {sql}"
        for table in ('"p_jobs"', '"p_batches"'):
            sql = sql.replace(table, "")
        assert '"batchactions_' not in sql and "p_" not in sql.replace('"', ""), sql


@pytest.mark.parametrize("dialect", sorted(OFFLINE))
def test_every_deciding_update_changes_a_value_of_the_row_it_matches(dialect: str) -> None:
    """MySQL counts changed rows, not matched ones: each UPDATE must set the version, the
    claim time or the status to a new value, or a winner could read a row count of 0."""
    statements = Statements.for_database(OFFLINE[dialect](), "batchactions_")
    for name in ("take", "renew", "release", "release_fenced", "reclaim", "finish", "finalize"):
        sql = getattr(statements, name)
        assert sql.startswith("UPDATE "), name
        assert any(
            change in sql
            for change in (
                "version` + 1",
                'version" + 1',
                "claimedAt` + 1",
                'claimedAt" + 1',
                "CASE WHEN EXISTS",
            )
        ), name
    # The job's moves set a status other than the one their WHERE requires.
    for name, to, frm in (
        ("pause", "PAUSED", "'PROCESSING'"),
        ("resume", "PROCESSING", "'PAUSED'"),
        ("abort", "ABORTED", "'PROCESSING'"),
    ):
        sql = getattr(statements, name)
        assert sql.startswith("UPDATE ") and f"= '{to}'" in sql.split(" WHERE ")[0], name
        assert frm in sql.split(" WHERE ")[1] and f"'{to}'" not in sql.split(" WHERE ")[1], name
