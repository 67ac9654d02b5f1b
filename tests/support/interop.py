"""Helpers for the interoperability tests: the Node fixtures and the TypeScript table shapes.

The fixtures live in ``shared/fixtures/node-sequelize`` beside the repository (never inside
it) and are only ever read: the SQLite file is copied before use, the MariaDB dump is replayed
into a database of our own. See that folder's README for the scenario they record.

Besides the fixtures, :data:`FLAVOURS` builds the same rows by hand in the other shapes the
TypeScript adapters leave behind (Prisma's JSON strings, native ``json``/``jsonb``, booleans,
BIGINTs that reach Python as text or ``Decimal``), so one expectation covers them all.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import (
    DistributedJobStatus,
    JobProgress,
    JobState,
    ProcessedRecord,
)

from . import REPO
from .backends import IN_CI

FIXTURES_DIR = REPO.parent / "shared" / "fixtures" / "node-sequelize"
FIXTURE_FILES = (
    "node-readback.json",
    "node-sequelize.sqlite",
    "node-sequelize-mariadb.sql",
    "node-sequelize-sqlite-schema.sql",
    "rows-sqlite.json",
)
#: The first line of the MariaDB dump; MySQL clients and older MariaDB clients reject it.
MARIADB_SANDBOX_LINE = r"/*M!999999\- enable the sandbox mode */"
#: Table names as @batchactions/state-sequelize and state-prisma create them (default prefix).
NODE_PREFIX = "batchactions_"
TABLES = ("jobs", "batches", "records")


def fixtures_dir() -> Path:
    """The Node fixture folder; skips the test when it is missing, except under CI=true."""
    missing = [name for name in FIXTURE_FILES if not (FIXTURES_DIR / name).is_file()]
    if missing:
        reason = (
            f"Node fixtures missing in {FIXTURES_DIR} ({', '.join(missing)}): the "
            "interoperability tests need the shared/ folder beside the repository"
        )
        if IN_CI:
            pytest.fail(f"CI=true: {reason}", pytrace=False)
        pytest.skip(reason)
    return FIXTURES_DIR


def execute(database: pw.Database, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one raw statement; return its rows (empty for statements without a result)."""
    cursor = database.execute_sql(sql, tuple(params))  # type: ignore[no-untyped-call]
    return [tuple(row) for row in cursor.fetchall()] if cursor.description else []


# -- what the TypeScript store read back -----------------------------------------------------


@dataclass(frozen=True)
class NodeReadback:
    """SequelizeStateStore's read-back of one database (node-readback.json), in our models."""

    job_a: JobState
    batch_records_a: dict[str, list[ProcessedRecord]]
    failed_a: list[ProcessedRecord]
    progress_a: JobProgress
    distributed_a: DistributedJobStatus
    job_b: JobState
    processed_b: list[ProcessedRecord]
    progress_b: JobProgress


def _records(items: list[dict[str, Any]]) -> list[ProcessedRecord]:
    return [ProcessedRecord.model_validate(item) for item in items]


def node_readback(side: str) -> NodeReadback:
    """The read-back Node made of ``side`` ("sqlite" or "mariadb"), camelCase JSON validated
    into our snake_case models."""
    data = json.loads((fixtures_dir() / "node-readback.json").read_text("utf-8"))[side]
    a, b = data["jobA"], data["jobB_extra"]
    return NodeReadback(
        job_a=JobState.model_validate(a["getJobState"]),
        batch_records_a={k: _records(v) for k, v in a["getBatchRecords"].items()},
        failed_a=_records(a["getFailedRecords"]),
        progress_a=JobProgress.model_validate(a["getProgress"]),
        distributed_a=DistributedJobStatus.model_validate(a["getDistributedStatus"]),
        job_b=JobState.model_validate(b["getJobState"]),
        processed_b=_records(b["getProcessedRecords"]),
        progress_b=JobProgress.model_validate(b["getProgress"]),
    )


def clock_of(job: JobState, progress: JobProgress) -> Callable[[], int]:
    """A clock stopped where Node's was when it read ``progress`` (started_at + elapsed_ms)."""
    assert job.started_at is not None
    now = job.started_at + progress.elapsed_ms
    return lambda: now


# -- the fixture databases ---------------------------------------------------------------------


def copy_sqlite_fixture(directory: Path) -> Path:
    """A private copy of node-sequelize.sqlite in ``directory``; the shared file is never opened."""
    source = fixtures_dir() / "node-sequelize.sqlite"
    target = directory / "node-sequelize.sqlite"
    assert source.resolve() != target.resolve()
    shutil.copyfile(source, target)
    return target


def mariadb_dump_statements() -> list[str]:
    """The dump's statements, without the sandbox line MariaDB's mysqldump puts first.

    mysqldump escapes line breaks inside strings, so every physical line ending in ``;``
    ends a statement.
    """
    first, *lines = (fixtures_dir() / "node-sequelize-mariadb.sql").read_text("utf-8").splitlines()
    assert first.strip() == MARIADB_SANDBOX_LINE, f"unexpected first line: {first!r}"
    statements: list[str] = []
    current: list[str] = []
    for line in lines:
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current))
            current = []
    assert not "\n".join(current).strip(), "the dump ends inside a statement"
    return statements


def replay_mariadb_dump(database: pw.Database) -> None:
    """Load node-sequelize-mariadb.sql into ``database`` one statement at a time.

    The statements go to the driver cursor without parameters, so nothing in the data is
    taken for a placeholder.
    """
    cursor = database.cursor()  # type: ignore[no-untyped-call]
    for statement in mariadb_dump_statements():
        cursor.execute(statement)


@cache
def _sqlite_rows_json() -> dict[str, Any]:
    return json.loads((fixtures_dir() / "rows-sqlite.json").read_text("utf-8"))  # type: ignore[no-any-return]


def sqlite_rows(table: str) -> list[dict[str, Any]]:
    """The rows of ``batchactions_<table>`` as node-sqlite3 read them (JSON as text, 0/1)."""
    return list(_sqlite_rows_json()[NODE_PREFIX + table])


def sqlite_storage_classes(table: str) -> list[dict[str, str]]:
    """SQLite's ``typeof()`` of every value Sequelize stored in ``batchactions_<table>``."""
    return list(_sqlite_rows_json()["_sqlite_typeof"][NODE_PREFIX + table])


def declared_types(table: str) -> dict[str, str]:
    """Column -> type as Sequelize declared it (JSON, BIGINT, TINYINT(1), ...), in order."""
    return dict(_sqlite_rows_json()["_declared_types"][NODE_PREFIX + table])


def sequelize_sqlite_ddl(prefix: str) -> list[str]:
    """The DDL Sequelize issued on SQLite (node-sequelize-sqlite-schema.sql) for ``prefix``."""
    text = (fixtures_dir() / "node-sequelize-sqlite-schema.sql").read_text("utf-8")
    return [
        line.rstrip().rstrip(";").replace(NODE_PREFIX, prefix)
        for line in text.splitlines()
        if line.strip() and "sqlite_sequence" not in line
    ]


# -- the same rows in every shape the TypeScript adapters leave behind ---------------------------

# Prisma's migration DDL for batchactions.prisma (state-prisma), with the prefix as {p}.
_PRISMA_POSTGRES_DDL = (
    'CREATE TABLE "{p}jobs" ("id" VARCHAR(36) NOT NULL, "status" VARCHAR(20) NOT NULL, '
    '"config" {json} NOT NULL, "batches" {json} NOT NULL DEFAULT \'[]\', '
    '"totalRecords" INTEGER NOT NULL DEFAULT 0, "startedAt" {bigint}, "completedAt" {bigint}, '
    '"distributed" BOOLEAN NOT NULL DEFAULT false, CONSTRAINT "{p}jobs_pkey" PRIMARY KEY ("id"))',
    'CREATE TABLE "{p}records" ("id" SERIAL NOT NULL, "jobId" VARCHAR(36) NOT NULL, '
    '"batchId" VARCHAR(36) NOT NULL, "recordIndex" INTEGER NOT NULL, '
    '"status" VARCHAR(10) NOT NULL, "raw" {json} NOT NULL, "parsed" {json} NOT NULL, '
    '"errors" {json} NOT NULL DEFAULT \'[]\', "processingError" TEXT, '
    'CONSTRAINT "{p}records_pkey" PRIMARY KEY ("id"))',
    'CREATE TABLE "{p}batches" ("id" VARCHAR(36) NOT NULL, "jobId" VARCHAR(36) NOT NULL, '
    '"batchIndex" INTEGER NOT NULL, "status" VARCHAR(20) NOT NULL DEFAULT \'PENDING\', '
    '"workerId" VARCHAR(128), "claimedAt" {bigint}, '
    '"recordStartIndex" INTEGER NOT NULL DEFAULT 0, "recordEndIndex" INTEGER NOT NULL DEFAULT 0, '
    '"processedCount" INTEGER NOT NULL DEFAULT 0, "failedCount" INTEGER NOT NULL DEFAULT 0, '
    '"version" INTEGER NOT NULL DEFAULT 0, CONSTRAINT "{p}batches_pkey" PRIMARY KEY ("id"))',
    'CREATE INDEX "{p}records_jobId_status_idx" ON "{p}records"("jobId", "status")',
    'CREATE INDEX "{p}records_jobId_batchId_idx" ON "{p}records"("jobId", "batchId")',
    'CREATE UNIQUE INDEX "{p}records_jobId_recordIndex_key" '
    'ON "{p}records"("jobId", "recordIndex")',
    'CREATE INDEX "{p}batches_jobId_status_idx" ON "{p}batches"("jobId", "status")',
    'CREATE UNIQUE INDEX "{p}batches_jobId_batchIndex_key" ON "{p}batches"("jobId", "batchIndex")',
)

_PRISMA_MYSQL_DDL = (
    "CREATE TABLE `{p}jobs` (`id` VARCHAR(36) NOT NULL, `status` VARCHAR(20) NOT NULL, "
    "`config` JSON NOT NULL, `batches` JSON NOT NULL, `totalRecords` INTEGER NOT NULL DEFAULT 0, "
    "`startedAt` BIGINT NULL, `completedAt` BIGINT NULL, "
    "`distributed` BOOLEAN NOT NULL DEFAULT false, PRIMARY KEY (`id`)) "
    "DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    "CREATE TABLE `{p}records` (`id` INTEGER NOT NULL AUTO_INCREMENT, "
    "`jobId` VARCHAR(36) NOT NULL, `batchId` VARCHAR(36) NOT NULL, "
    "`recordIndex` INTEGER NOT NULL, `status` VARCHAR(10) NOT NULL, `raw` JSON NOT NULL, "
    "`parsed` JSON NOT NULL, `errors` JSON NOT NULL, `processingError` TEXT NULL, "
    "INDEX `{p}records_jobId_status_idx`(`jobId`, `status`), "
    "INDEX `{p}records_jobId_batchId_idx`(`jobId`, `batchId`), "
    "UNIQUE INDEX `{p}records_jobId_recordIndex_key`(`jobId`, `recordIndex`), PRIMARY KEY (`id`)) "
    "DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    "CREATE TABLE `{p}batches` (`id` VARCHAR(36) NOT NULL, `jobId` VARCHAR(36) NOT NULL, "
    "`batchIndex` INTEGER NOT NULL, `status` VARCHAR(20) NOT NULL DEFAULT 'PENDING', "
    "`workerId` VARCHAR(128) NULL, `claimedAt` BIGINT NULL, "
    "`recordStartIndex` INTEGER NOT NULL DEFAULT 0, `recordEndIndex` INTEGER NOT NULL DEFAULT 0, "
    "`processedCount` INTEGER NOT NULL DEFAULT 0, `failedCount` INTEGER NOT NULL DEFAULT 0, "
    "`version` INTEGER NOT NULL DEFAULT 0, "
    "INDEX `{p}batches_jobId_status_idx`(`jobId`, `status`), "
    "UNIQUE INDEX `{p}batches_jobId_batchIndex_key`(`jobId`, `batchIndex`), PRIMARY KEY (`id`)) "
    "DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
)


def _same(value: Any) -> Any:
    return value


def _json_string(text: str) -> str:
    """JSON text wrapped in a JSON string: what Prisma stores when handed JSON.stringify output
    (state-prisma's mappers do that; a Json field stores a JavaScript string as a JSON string)."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class Flavour:
    """One way the TypeScript adapters' tables and values can look in a database."""

    id: str
    backend: str  # "sqlite", "mysql" or "postgres"
    ddl: Callable[[str], list[str]]  # prefix -> CREATE statements
    #: What the driver hands back for job A's (config, startedAt, distributed): see stored_shape.
    stored_as: tuple[str, str, str]
    #: How a value of each Sequelize-declared type is bound: (SQL expression, Python value).
    json_sql: str = "{}"
    json_value: Callable[[str], Any] = _same
    bigint_value: Callable[[int], Any] = _same
    bool_value: Callable[[int], Any] = _same

    def bind(self, declared: str, value: Any, marker: str) -> tuple[str, Any]:
        """The placeholder and the parameter for ``value`` of a ``declared`` column."""
        if value is None:
            return marker, None
        if declared == "JSON":
            return self.json_sql.format(marker), self.json_value(value)
        if declared == "BIGINT":
            return marker, self.bigint_value(value)
        if declared == "TINYINT(1)":
            return marker, self.bool_value(value)
        return marker, value


def _postgres_ddl(json_type: str, bigint_type: str = "BIGINT") -> Callable[[str], list[str]]:
    return lambda p: [
        s.format(p=p, json=json_type, bigint=bigint_type) for s in _PRISMA_POSTGRES_DDL
    ]


def _sqlite_ddl(bigint_type: str = "BIGINT") -> Callable[[str], list[str]]:
    return lambda p: [s.replace(" BIGINT", f" {bigint_type}") for s in sequelize_sqlite_ddl(p)]


# The "*-prisma-json-strings" flavours hold JSON text stored as a JSON string, as Prisma
# stores state-prisma's JSON.stringify output; codec.loads decodes those twice.
FLAVOURS: dict[str, Flavour] = {
    f.id: f
    for f in (
        Flavour(
            "sqlite-prisma-json-strings",
            "sqlite",
            _sqlite_ddl(),
            ("json string", "int", "int"),
            json_value=_json_string,
        ),
        Flavour(
            "sqlite-json-as-utf8-blob",
            "sqlite",
            _sqlite_ddl(),
            ("bytes", "int", "int"),
            json_value=lambda text: text.encode("utf-8"),
        ),
        Flavour(
            "sqlite-bigint-as-numeric-text",
            "sqlite",
            _sqlite_ddl("TEXT"),
            ("json text", "str", "int"),
            bigint_value=str,
        ),
        Flavour(
            "mysql-prisma-json-strings",
            "mysql",
            lambda p: [s.format(p=p) for s in _PRISMA_MYSQL_DDL],
            ("json string", "int", "int"),
            json_value=_json_string,
        ),
        Flavour(
            # psycopg2 decodes jsonb, so Prisma's JSON string arrives as JSON text.
            "postgres-prisma-jsonb-strings",
            "postgres",
            _postgres_ddl("JSONB"),
            ("json text", "int", "bool"),
            json_sql="to_jsonb({}::text)",
            bool_value=bool,
        ),
        Flavour(
            "postgres-jsonb-native",
            "postgres",
            _postgres_ddl("JSONB"),
            ("dict", "int", "bool"),
            json_sql="{}::jsonb",
            bool_value=bool,
        ),
        Flavour(
            "postgres-sequelize-json-native",
            "postgres",
            _postgres_ddl("JSON"),
            ("dict", "int", "bool"),
            json_sql="{}::json",
            bool_value=bool,
        ),
        Flavour(
            "postgres-bigint-as-numeric",
            "postgres",
            _postgres_ddl("JSONB", "NUMERIC(20, 0)"),
            ("dict", "Decimal", "bool"),
            json_sql="{}::jsonb",
            bigint_value=Decimal,
            bool_value=bool,
        ),
    )
}


def quote(backend: str, name: str) -> str:
    """An identifier quoted for ``backend``."""
    return f"`{name}`" if backend == "mysql" else f'"{name}"'


def create_node_tables(database: pw.Database, flavour: Flavour, prefix: str) -> None:
    """Create the three tables as the TypeScript adapter would, under ``prefix``."""
    for statement in flavour.ddl(prefix):
        execute(database, statement)


def insert_node_rows(database: pw.Database, flavour: Flavour, prefix: str) -> None:
    """Insert the scenario's rows (rows-sqlite.json) encoded the way ``flavour`` stores them.

    Records get fresh auto-increment ids, so later inserts by a store do not collide.
    """
    marker = "?" if flavour.backend == "sqlite" else "%s"
    for table in TABLES:
        types = declared_types(table)
        for row in sqlite_rows(table):
            columns = [c for c in types if not (table == "records" and c == "id")]
            bound = [flavour.bind(types[c], row[c], marker) for c in columns]
            names = ", ".join(quote(flavour.backend, c) for c in columns)
            values = ", ".join(sql for sql, _ in bound)
            execute(
                database,
                f"INSERT INTO {quote(flavour.backend, prefix + table)} ({names}) VALUES ({values})",
                [param for _, param in bound],
            )


def stored_shape(
    database: pw.Database, flavour: Flavour, prefix: str, job_id: str
) -> tuple[str, str, str]:
    """What the driver returns for a job's (config, startedAt, distributed): Python type
    names, with JSON held in a str told apart as "json text" or (Prisma's) "json string"."""

    def q(name: str) -> str:
        return quote(flavour.backend, name)

    marker = "?" if flavour.backend == "sqlite" else "%s"
    [(config, started, distributed)] = execute(
        database,
        f"SELECT {q('config')}, {q('startedAt')}, {q('distributed')} "
        f"FROM {q(prefix + 'jobs')} WHERE {q('id')} = {marker}",
        [job_id],
    )
    if isinstance(config, str):
        kind = "json string" if isinstance(json.loads(config), str) else "json text"
    else:
        kind = type(config).__name__
    return kind, type(started).__name__, type(distributed).__name__


def typed(row: Sequence[Any]) -> list[tuple[str, Any]]:
    """Each value with its Python type, so 1 == True == 1.0 no longer compare equal."""
    return [(type(value).__name__, value) for value in row]
