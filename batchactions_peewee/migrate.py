"""Apply the numbered migrations in ``batchactions_peewee/migrations/``.

The scripts are ``playhouse.migrations`` scripts: each defines ``up(migrator, db)``, and the
Runner applies the pending ones in numeric order. The tables they touch carry the store's
table prefix, which a script reads with :func:`table_prefix`; the applied steps are recorded
in a history table of our own, ``{prefix}migrations``, so they never mix with the
application's own migrations.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import peewee as pw
from playhouse.migrations import Runner

from .tables import check_table_prefix, unwrap

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


__all__ = [
    "MIGRATIONS_DIR",
    "MigrationState",
    "history_table",
    "migrate",
    "migration_status",
    "runner",
    "table_prefix",
]
