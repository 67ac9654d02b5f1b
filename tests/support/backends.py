"""Test databases: one fresh database per server per test session, dropped afterwards.

``BATCHACTIONS_TEST_MYSQL_URL`` and ``BATCHACTIONS_TEST_POSTGRES_URL`` name a server and a
database we may connect to (e.g. ``mysql://root@127.0.0.1:3306/test``); the suite creates
its own database beside it. Unset, that backend is skipped, except under CI=true, where a
missing or unreachable server fails the run.
"""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import peewee as pw
from playhouse.db_url import connect

ENV = {"mysql": "BATCHACTIONS_TEST_MYSQL_URL", "postgres": "BATCHACTIONS_TEST_POSTGRES_URL"}
EXAMPLE_URL = {
    "mysql": "mysql://root@127.0.0.1:3306/test",
    "postgres": "postgresql://postgres@127.0.0.1:5432/postgres",
}
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
#: The Celery tests' broker (tests/support/celery_app.py), a RabbitMQ server.
BROKER_ENV = "BATCHACTIONS_TEST_BROKER_URL"
BROKER_EXAMPLE = "amqp://guest:guest@127.0.0.1:5672//"
BROKER_URL = os.environ.get(BROKER_ENV) or BROKER_EXAMPLE


def server_url(kind: str) -> str | None:
    return os.environ.get(ENV[kind]) or None


def with_database(url: str, name: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


@contextmanager
def fresh_server_database(kind: str) -> Iterator[str]:
    """Create a uniquely named database on the server, yield its URL, drop it afterwards."""
    url = server_url(kind)
    assert url is not None
    name = f"batchactions_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = connect(url)
    if kind == "mysql":
        admin.execute_sql(
            f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci"
        )
    else:
        admin.execute_sql(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(url, name)
    finally:
        if kind == "mysql":
            admin.execute_sql(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def open_database(url: str) -> pw.Database:
    """A Peewee database for ``url``; SQLite files get WAL and a busy timeout."""
    database: pw.Database
    if url.startswith("sqlite"):
        database = connect(url, pragmas={"journal_mode": "wal", "busy_timeout": 10000}, timeout=10)
    else:
        database = connect(url)
    return database


def mysql_packet_limit(database: pw.Database) -> int:
    cursor: Any = database.execute_sql("SELECT @@GLOBAL.max_allowed_packet")  # type: ignore[no-untyped-call]
    return int(cursor.fetchone()[0])


@contextmanager
def mysql_global_packet_limit(database: pw.Database, limit: int) -> Iterator[None]:
    """Connections opened inside the block get ``limit`` as their max_allowed_packet (the
    session value is read-only: it is the global one when the connection opens); the
    server's own value is back on exit. Every client of the server sees the lower limit
    meanwhile, so keep the block to the connect."""
    before = mysql_packet_limit(database)
    database.execute_sql(f"SET GLOBAL max_allowed_packet = {int(limit)}")  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        database.execute_sql(f"SET GLOBAL max_allowed_packet = {before}")  # type: ignore[no-untyped-call]
