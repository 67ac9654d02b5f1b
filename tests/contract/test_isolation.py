"""The store binds models of its own: the caller's models, tables and settings stay untouched."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.errors import SchemaMismatchError

from ..support.backends import open_database
from ..support.factories import job
from ..support.stores import new_prefix


@pytest.mark.parametrize("kind", ["sqlite", "mysql", "postgres"])
def test_user_models_and_database_settings_are_untouched(
    kind: str, url_for: Callable[[str], str]
) -> None:
    database = open_database(url_for(kind))
    prefix = new_prefix()

    class Job(pw.Model):  # a user model whose name matches one of ours
        id = pw.CharField(primary_key=True)
        title = pw.TextField()

        class Meta:
            table_name = f"{prefix}user_jobs"

    Job.bind(database)
    settings: Any = database  # private attributes the stubs do not declare
    before = (dict(settings._field_types), dict(settings._operations), database.autoconnect)
    meta_before = (Job._meta.database, Job._meta.table_name, list(Job._meta.fields))
    database.create_tables([Job])
    store = PeeweeStateStore(database, table_prefix=prefix)
    store.create_tables()
    store.save_job_state(job())
    assert (dict(settings._field_types), dict(settings._operations), database.autoconnect) == before
    assert (Job._meta.database, Job._meta.table_name, list(Job._meta.fields)) == meta_before
    assert store.tables.jobs._meta.table_name == f"{prefix}jobs"
    store.drop_tables()
    assert database.table_exists(Job._meta.table_name)
    database.drop_tables([Job])
    database.close()


def test_two_stores_with_different_prefixes_share_a_database_independently(
    url_for: Callable[[str], str],
) -> None:
    database = open_database(url_for("sqlite"))
    a = PeeweeStateStore(database, table_prefix="a_")
    b = PeeweeStateStore(database, table_prefix="b_")
    a.create_tables()
    b.create_tables()
    j = job()
    a.save_job_state(j)
    assert a.get_job_state(j.id) == j
    assert b.get_job_state(j.id) is None


def test_a_database_proxy_may_be_initialized_after_the_store_is_made(
    url_for: Callable[[str], str],
) -> None:
    proxy = pw.DatabaseProxy()
    store = PeeweeStateStore(proxy, table_prefix="proxied_")
    proxy.initialize(open_database(url_for("sqlite")))
    store.create_tables()
    j = job()
    store.save_job_state(j)
    assert store.get_job_state(j.id) == j
    assert store.dialect.name == "sqlite"


def test_create_tables_refuses_a_foreign_table_with_our_name(url_for: Callable[[str], str]) -> None:
    database = open_database(url_for("sqlite"))
    database.execute_sql('CREATE TABLE "x_jobs" ("id" TEXT PRIMARY KEY, "title" TEXT)')  # type: ignore[no-untyped-call]
    store = PeeweeStateStore(database, table_prefix="x_")
    with pytest.raises(SchemaMismatchError):
        store.create_tables()


def test_create_tables_adds_an_index_that_is_missing(peewee_store: PeeweeStateStore) -> None:
    database = peewee_store.tables.records._meta.database
    table = peewee_store.tables.batches._meta.table_name
    index = f"{table}_job_id_status"
    drop = (
        f"DROP INDEX {index}"
        if peewee_store.dialect.name != "mysql"
        else f"DROP INDEX {index} ON {table}"
    )
    database.execute_sql(drop)
    peewee_store.create_tables()
    assert index in {i.name for i in database.get_indexes(table)}
    peewee_store.create_tables()
