"""Migrations: on every backend they make exactly the schema ``create_tables()`` makes, leave
existing tables alone, and record their steps in a history table of our own."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.errors import InvalidTablePrefixError
from batchactions_peewee.store.schema import (
    MIGRATIONS_DIR,
    history_table,
    migrate,
    migration_status,
)

from ..support import REPO
from ..support.backends import open_database
from ..support.factories import job
from ..support.interop import FLAVOURS, create_node_tables
from ..support.schema import schema_snapshot
from ..support.stores import PEEWEE_BACKENDS, new_prefix


@pytest.fixture(params=PEEWEE_BACKENDS)
def database(
    request: pytest.FixtureRequest, url_for: Callable[[str], str]
) -> Iterator[pw.Database]:
    """An open database on each backend; tests give their tables a fresh prefix."""
    db = open_database(url_for(request.param))
    yield db
    db.close()


def created_by_create_tables(database: pw.Database) -> tuple[PeeweeStateStore, str]:
    prefix = new_prefix()
    store = PeeweeStateStore(database, table_prefix=prefix)
    store.create_tables()
    return store, prefix


def test_migrations_make_the_same_schema_as_create_tables(database: pw.Database) -> None:
    _, reference = created_by_create_tables(database)
    prefix = new_prefix()
    assert migrate(database, prefix=prefix) == ["0001_initial"]
    assert schema_snapshot(database, prefix) == schema_snapshot(database, reference)


def test_migrated_tables_work_as_a_store(database: pw.Database) -> None:
    prefix = new_prefix()
    migrate(database, prefix=prefix)
    store = PeeweeStateStore(database, table_prefix=prefix)
    saved = job()
    store.save_job_state(saved)
    assert store.claim_batch(saved.id, "w1").claimed
    assert store.get_job_state(saved.id) is not None


def test_migrate_leaves_tables_from_create_tables_unchanged_and_records_the_first_step(
    database: pw.Database,
) -> None:
    store, prefix = created_by_create_tables(database)
    saved = job()
    store.save_job_state(saved)
    before = schema_snapshot(database, prefix)
    state_before = store.get_job_state(saved.id)
    assert migrate(database, prefix=prefix) == ["0001_initial"]
    assert schema_snapshot(database, prefix) == before
    assert state_before is not None
    assert store.get_job_state(saved.id) == state_before
    assert [
        (m.name, m.applied_at is not None) for m in migration_status(database, prefix=prefix)
    ] == [("0001_initial", True)]


def test_migrate_twice_applies_nothing_the_second_time(database: pw.Database) -> None:
    prefix = new_prefix()
    assert migrate(database, prefix=prefix) == ["0001_initial"]
    assert migrate(database, prefix=prefix) == []


def test_the_history_table_is_named_with_the_prefix_and_kept_per_prefix(
    database: pw.Database,
) -> None:
    first, second = new_prefix(), new_prefix()
    migrate(database, prefix=first)
    tables = set(database.get_tables())
    assert history_table(first) == f"{first}migrations"
    assert history_table(first) in tables
    assert "schema_migration" not in tables  # playhouse's default name is never used
    assert [m.applied_at for m in migration_status(database, prefix=second)] == [None]
    assert migrate(database, prefix=second) == ["0001_initial"]


def test_migrate_makes_only_the_tables_that_are_missing(database: pw.Database) -> None:
    _, reference = created_by_create_tables(database)
    prefix = new_prefix()
    store = PeeweeStateStore(database, table_prefix=prefix)
    store.tables.jobs.create_table()
    store.tables.jobs.insert(id="kept", status="CREATED", config="{}").execute()
    migrate(database, prefix=prefix)
    assert schema_snapshot(database, prefix) == schema_snapshot(database, reference)
    assert store.tables.jobs.select().count() == 1


@pytest.mark.parametrize(
    "flavour_id",
    ["sqlite-prisma-json-strings", "mysql-prisma-json-strings", "postgres-jsonb-native"],
)
def test_migrate_leaves_tables_made_by_the_typescript_adapters_unchanged(
    flavour_id: str, url_for: Callable[[str], str]
) -> None:
    flavour = FLAVOURS[flavour_id]
    database = open_database(url_for(flavour.backend))
    try:
        prefix = new_prefix()
        create_node_tables(database, flavour, prefix)
        before = schema_snapshot(database, prefix)
        assert migrate(database, prefix=prefix) == ["0001_initial"]
        assert schema_snapshot(database, prefix) == before
    finally:
        database.close()


def test_migrate_refuses_an_invalid_prefix_before_touching_the_database(
    tmp_path: Path,
) -> None:
    database = pw.SqliteDatabase(str(tmp_path / "x.db"))
    with pytest.raises(InvalidTablePrefixError):
        migrate(database, prefix="bad-prefix")
    assert database.get_tables() == []


def _packages(setuptools: Any, packages: list[str] | dict[str, Any]) -> list[str]:
    """pyproject's ``packages``: a list, or ``{"find": {...}}`` as setuptools expands it."""
    if isinstance(packages, list):
        return packages
    find = packages["find"]
    finder = (
        setuptools.find_namespace_packages
        if find.get("namespaces", True)
        else setuptools.find_packages
    )
    found: list[str] = []
    for where in find.get("where", ["."]):
        found += finder(
            where=where, include=find.get("include", ["*"]), exclude=find.get("exclude", ())
        )
    return found


def test_the_migration_scripts_ship_inside_the_installed_package(tmp_path: Path) -> None:
    # Build the package as a wheel would (setuptools' build_py, with pyproject.toml's
    # package list) from a copy of the project, and look for the scripts in the result.
    setuptools = pytest.importorskip("setuptools")
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    project = tmp_path / "project"
    shutil.copytree(
        REPO / "batchactions_peewee",
        project / "batchactions_peewee",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    cwd = os.getcwd()
    os.chdir(project)
    try:
        dist = setuptools.Distribution(
            {
                "name": "batchactions-peewee",
                "script_name": "setup.py",
                "packages": _packages(setuptools, config["packages"]),
                "package_data": config.get("package-data", {}),
            }
        )
        build_py = dist.get_command_obj("build_py")
        build_py.build_lib = str(tmp_path / "lib")
        build_py.ensure_finalized()
        build_py.run()
    finally:
        os.chdir(cwd)
    built = tmp_path / "lib" / MIGRATIONS_DIR.relative_to(REPO)
    scripts = sorted(p.name for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert scripts[0] == "0001_initial.py"
    assert sorted(p.name for p in built.glob("[0-9]*.py")) == scripts
