"""The table commands: ``init`` creates the tables, ``migrate`` applies the migrations, and
``sql`` prints the tables' DDL for a dialect without a server."""

from __future__ import annotations

import argparse

from .. import __version__
from ..store.schema import (
    OFFLINE_DIALECTS,
    ddl_statements,
    history_table,
    migrate,
    migration_status,
)
from .common import PROG, database_url, open_database, open_store, redact, table_prefix
from .render import print_json


def cmd_init(args: argparse.Namespace) -> int:
    """Create the three tables where missing."""
    store = open_store(args, create=True)
    tables = store.table_names()
    if args.json:
        print_json({"database": redact(database_url(args)), "tables": tables})
    else:
        print(f"tables ready in {redact(database_url(args))}: {', '.join(tables)}")
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Print the DDL of the tables for one dialect."""
    prefix = table_prefix(args)
    statements = ddl_statements(args.dialect, prefix)
    if args.json:
        print_json({"dialect": args.dialect, "tablePrefix": prefix, "statements": statements})
        return 0
    print(f"-- {PROG} {__version__}: the tables with prefix {prefix!r}, as create_tables()")
    print("-- creates them on")
    for line in OFFLINE_DIALECTS[args.dialect][1]:
        print(f"-- {line}")
    for statement in statements:
        print(f"{statement};")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the pending migrations."""
    url, prefix = database_url(args), table_prefix(args)
    database = open_database(url)
    applied = migrate(database, prefix=prefix)
    states = migration_status(database, prefix=prefix)
    if args.json:
        print_json(
            {
                "database": redact(url),
                "historyTable": history_table(prefix),
                "applied": applied,
                "migrations": [
                    {
                        "name": s.name,
                        "appliedAt": s.applied_at.isoformat() if s.applied_at else None,
                    }
                    for s in states
                ],
            }
        )
    elif applied:
        for name in applied:
            print(f"applied {name}")
    else:
        print(f"up to date: {len(states)} migration(s) applied ({history_table(prefix)})")
    return 0
