"""A statement too large for MySQL's and MariaDB's ``max_allowed_packet``: one clear error
naming the limit, raised at once; never a lost connection retried for seconds on end.

The limit of a connection is the server's global one when it connects (the session value is
read-only), so each test lowers the global limit just for the connect of its own store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import peewee as pw
import pytest

from batchactions_peewee import PeeweeStateStore, ProcessedRecord
from batchactions_peewee.errors import StatementTooLarge, StoreUnavailable
from batchactions_peewee.store.dialects import MySQLDialect

from ..support.backends import mysql_global_packet_limit, open_database
from ..support.factories import job
from ..support.stores import make_store

MIB = 2**20


@pytest.fixture
def small_packets(
    url_for: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[PeeweeStateStore]:
    """A MySQL store on fresh tables whose every connection accepts statements of 1 MiB at
    most, as a server whose limit is 1 MiB: each is opened while the global limit is that."""
    url = url_for("mysql")
    store, database = make_store(url)
    database.close()
    admin = open_database(url)
    connect: Callable[[], object] = database._connect  # type: ignore[attr-defined]

    def connect_small() -> object:
        with mysql_global_packet_limit(admin, MIB):
            return connect()

    monkeypatch.setattr(database, "_connect", connect_small)
    try:
        yield store
    finally:
        monkeypatch.undo()
        admin.close()
        database.close()
        store.drop_tables()
        database.close()


def _save_record(store: PeeweeStateStore, size: int) -> str:
    j = job(batches=1)
    store.save_job_state(j)
    big = ProcessedRecord(index=0, raw={"blob": "x" * size}, parsed={}, status="pending")
    store.save_processed_record(j.id, j.batches[0].id, big)
    return j.id


def test_a_statement_over_the_limit_is_refused_before_it_is_sent(
    small_packets: PeeweeStateStore,
) -> None:
    store = small_packets
    database = store.database
    started = time.monotonic()
    with pytest.raises(StatementTooLarge) as caught:
        _save_record(store, 5 * MIB)
    assert str(caught.value) == (
        "the database refuses a 5.0 MiB statement (1 record): raise the server's "
        "max_allowed_packet (now 1.0 MiB) above that"
    )
    assert isinstance(caught.value, pw.OperationalError)
    assert not isinstance(caught.value, StoreUnavailable)
    assert time.monotonic() - started < 5
    # Nothing was sent: the connection is the one the store had, alive.
    assert not database.is_closed()
    connection = database.connection()
    assert database.execute_sql("SELECT 1").fetchone() == (1,)
    assert database.connection() is connection
    [listed] = store.list_jobs()
    assert store.get_pending_records(listed.id) == []


def test_a_statement_the_server_refuses_is_not_retried_as_a_lost_connection(
    small_packets: PeeweeStateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Below the size from which statements are weighed: sent, and refused by the server.
    store = small_packets
    sent: list[str] = []
    execute = store.database.execute_sql

    def counting(sql: str, params: object = None) -> object:
        if sql.startswith("INSERT"):
            sent.append(sql)
        return execute(sql, params)

    monkeypatch.setattr(store.database, "execute_sql", counting)
    started = time.monotonic()
    with pytest.raises(StatementTooLarge) as caught:
        _save_record(store, 2 * MIB)
    assert str(caught.value) == (
        "the database refuses a 2.0 MiB statement (1 record): raise the server's "
        "max_allowed_packet (now 1.0 MiB) above that"
    )
    assert time.monotonic() - started < 5
    records_inserts = [sql for sql in sent if "records" in sql]
    assert len(records_inserts) == 1, "sent once, not retried"
    assert caught.value.__cause__ is not None  # the driver's error


def test_the_refusal_is_recognised_behind_a_failed_rollback() -> None:
    dialect = MySQLDialect(pw.MySQLDatabase(None))
    refused = pw.OperationalError(1153, "Got a packet bigger than 'max_allowed_packet' bytes")
    lost = pw.InterfaceError(0, "")  # the rollback, on the connection the server closed
    assert not dialect.refuses_packet(lost)
    lost.__context__ = refused
    assert dialect.refuses_packet(lost)
    assert dialect.refuses_packet(pw.OperationalError(1301, "Result of x was larger"))
    assert not dialect.refuses_packet(pw.OperationalError(2006, "MySQL server has gone away"))
