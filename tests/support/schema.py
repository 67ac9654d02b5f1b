"""What a schema looks like, for comparing two: the tables' columns, indexes and the details
each server keeps besides (``schema_snapshot``), with the table prefix taken out."""

from __future__ import annotations

from typing import Any

import peewee as pw

TABLES = ("jobs", "records", "batches")


def backend_of(database: pw.Database) -> str:
    if isinstance(database, pw.MySQLDatabase):
        return "mysql"
    if isinstance(database, pw.PostgresqlDatabase):
        return "postgres"
    return "sqlite"


def _rows(database: pw.Database, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cursor: Any = database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
    return sorted(tuple(row) for row in cursor.fetchall())


def _server_details(database: pw.Database, table: str) -> dict[str, Any]:
    """What get_columns does not show: MySQL charsets and engine, PostgreSQL's column
    sizes, SQLite's CREATE TABLE statement."""
    kind = backend_of(database)
    if kind == "mysql":
        return {
            "table": _rows(
                database,
                "SELECT ENGINE, TABLE_COLLATION FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            ),
            "columns": _rows(
                database,
                "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME, COLLATION_NAME, "
                "IS_NULLABLE, COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                (table,),
            ),
        }
    if kind == "postgres":
        return {
            "columns": _rows(
                database,
                "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                "column_default FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s",
                (table,),
            )
        }
    [(sql,)] = _rows(database, "SELECT sql FROM sqlite_master WHERE name = ?", (table,))
    return {"sql": sql}


def schema_snapshot(database: pw.Database, prefix: str) -> dict[str, Any]:
    """The three tables' columns and indexes, with ``prefix`` taken out of every name."""

    def plain(value: Any) -> Any:
        return value.replace(prefix, "<prefix>") if isinstance(value, str) else value

    snapshot: dict[str, Any] = {}
    for name in TABLES:
        table = prefix + name
        columns = sorted(
            (c.name, c.data_type, c.full_type, c.null, c.primary_key, plain(c.default), c.identity)
            for c in database.get_columns(table)
        )
        indexes = sorted(
            (plain(i.name), tuple(i.columns), i.unique) for i in database.get_indexes(table)
        )
        details = _server_details(database, table)
        snapshot[name] = {
            "columns": columns,
            "indexes": indexes,
            "details": plain(repr(details)),
        }
    return snapshot
