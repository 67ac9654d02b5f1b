"""The schema: create and drop the tables, render their DDL offline, apply migrations.

``create_tables`` is idempotent and safe from several processes at once. The migrations in
``store/migrations/`` are ``playhouse.migrations`` scripts: each defines
``up(migrator, db)``, and the Runner applies the pending ones in numeric order. The tables
they touch carry the store's table prefix, which a script reads with :func:`table_prefix`;
the applied steps are recorded in a history table of our own, ``{prefix}migrations``, so
they never mix with the application's own migrations.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import peewee as pw
from playhouse.migrations import Runner

from ..checks import check_table_prefix
from ..errors import SchemaMismatchError
from .dialects import Dialect, dialect_for, unwrap
from .tables import Tables, build_tables

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DEFAULT_PREFIX = "batchactions_"

_prefix: ContextVar[str] = ContextVar("batchactions_table_prefix", default=DEFAULT_PREFIX)


def table_prefix() -> str:
    """The table prefix of the migration being applied (for the scripts)."""
    return _prefix.get()


def history_table(prefix: str = DEFAULT_PREFIX) -> str:
    """The table recording the applied migrations for ``prefix``."""
    return f"{check_table_prefix(prefix)}migrations"


@dataclass(frozen=True, slots=True)
class MigrationState:
    """One migration script and when it was applied (None: pending)."""

    name: str
    applied_at: datetime.datetime | None


def runner(database: pw.Database | pw.DatabaseProxy, prefix: str = DEFAULT_PREFIX) -> Runner:
    """A playhouse.migrations Runner over our scripts and our history table."""
    return Runner(unwrap(database), str(MIGRATIONS_DIR), table_name=history_table(prefix))


@contextlib.contextmanager
def _prefixed(prefix: str) -> Iterator[None]:
    token = _prefix.set(check_table_prefix(prefix))
    try:
        yield
    finally:
        _prefix.reset(token)


def migrate(database: pw.Database | pw.DatabaseProxy, *, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Apply the pending migrations for ``prefix``; return the names applied, in order.

    Tables that exist already (made by ``create_tables()`` or by the TypeScript adapters)
    are left as they are, and the migration that would have made them is recorded as
    applied.
    """
    with _prefixed(prefix):
        applied: list[str] = runner(database, prefix).up()
    return applied


def migration_status(
    database: pw.Database | pw.DatabaseProxy, *, prefix: str = DEFAULT_PREFIX
) -> list[MigrationState]:
    """Every migration script, in order, with the time it was applied."""
    return [MigrationState(m.name, m.applied) for m in runner(database, prefix).status() if m.path]


# -- create and drop -------------------------------------------------------------------


def create_tables(database: pw.Database, tables: Tables) -> None:
    """Create the three tables and their indexes where missing (idempotent).

    A table that exists, ours or one the TypeScript adapters created, is left as it is,
    provided it has every column we use; an index is created only if no index of that name
    or of those columns exists. Safe to run from several processes at once.
    """
    dialect = dialect_for(database)
    for model in tables.all:
        _create_table(database, model)
        for index in model._meta.fields_to_index():
            _create_index(database, dialect, model, index)


def drop_tables(database: pw.Database, tables: Tables) -> None:
    """Drop the three tables where present (idempotent)."""
    database.drop_tables(tables.all, safe=True)


def _create_table(database: pw.Database, model: type[pw.Model]) -> None:
    name = model._meta.table_name
    if database.table_exists(name):
        _check_columns(database, model)
        return
    try:
        model.create_table(safe=False)
    except pw.DatabaseError:
        if not database.table_exists(name):  # else another process got there first
            raise


def _create_index(
    database: pw.Database, dialect: Dialect, model: type[pw.Model], index: Any
) -> None:
    name = model._meta.table_name
    columns = [f.column_name for f in index._expressions]

    def present() -> bool:
        return any(n == index._name or c == columns for n, c in dialect.indexes(name))

    if present():
        return
    try:
        query: Any = cast(Any, model)._schema._create_index(index)
        database.execute(query)  # type: ignore[no-untyped-call]
    except pw.DatabaseError:
        if not present():  # else another process got there first
            raise


def _check_columns(database: pw.Database, model: type[pw.Model]) -> None:
    table = model._meta.table_name
    found = {c.name for c in database.get_columns(table)}
    missing = [f.column_name for f in model._meta.sorted_fields if f.column_name not in found]
    if missing:
        raise SchemaMismatchError(
            f"table {table!r} exists but lacks columns {missing}: it is not a batchactions "
            "table (choose another table_prefix) or needs `batchactions-peewee migrate`"
        )


# -- offline DDL ------------------------------------------------------------------------


class _OfflineMySQL(pw.MySQLDatabase):
    """A MySQL database that never connects: renders DDL for a given server version."""

    def __init__(self, server_version: tuple[int, ...]) -> None:
        super().__init__(None)
        self.server_version = server_version

    def connect(self, reuse_if_open: bool = False) -> bool:
        return False


#: The dialects ``ddl_statements`` renders for: a database that never connects, and what
#: the rendered DDL assumes of the server.
OFFLINE_DIALECTS: dict[str, tuple[Callable[[], pw.Database], list[str]]] = {
    "sqlite": (lambda: pw.SqliteDatabase(None), ["SQLite."]),
    "mysql": (
        lambda: _OfflineMySQL((8, 0, 17)),
        [
            "MySQL >= 8.0.17: utf8mb4 with the binary NO PAD collation utf8mb4_0900_bin,",
            "so ids compare exactly. MariaDB >= 10.2: use --dialect mariadb (utf8mb4_nopad_bin).",
            "On older servers create_tables() falls back to utf8mb4_bin.",
        ],
    ),
    "mariadb": (
        lambda: _OfflineMySQL((10, 2)),
        [
            "MariaDB >= 10.2: utf8mb4 with the binary NO PAD collation utf8mb4_nopad_bin,",
            "so ids compare exactly. MySQL >= 8.0.17: use --dialect mysql (utf8mb4_0900_bin).",
        ],
    ),
    "postgres": (lambda: pw.PostgresqlDatabase(None), ["PostgreSQL."]),
}


def ddl_statements(dialect: str, prefix: str) -> list[str]:
    """The CREATE TABLE and CREATE INDEX statements ``create_tables()`` runs on ``dialect``
    (a key of ``OFFLINE_DIALECTS``), rendered without a server."""
    database = OFFLINE_DIALECTS[dialect][0]()
    tables = build_tables(database, prefix, table_settings=dialect_for(database).table_settings())
    statements = []
    for model in tables.all:
        schema: Any = getattr(model, "_schema")  # noqa: B009 - private in the stubs
        queries = [schema._create_table(safe=False), *schema._create_indexes(safe=False)]
        statements += [query.query()[0] for query in queries]
    return statements
