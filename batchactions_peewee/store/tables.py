"""The three Peewee models, built per store and table prefix.

The column names are those of the TypeScript adapters (camelCase), so both can share one
database. The models are bound to the caller's database through a fresh subclass per store;
no model or setting of the caller's is touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import peewee as pw

from .dialects import dialect_for


class JsonTextField(pw.TextField):
    """JSON held as text, of the dialect's ``json_text_type`` (LONGTEXT without a default
    on MySQL/MariaDB, TEXT with ``sql_default`` as its default elsewhere)."""

    def __init__(self, *args: Any, sql_default: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_default = sql_default

    def python_value(self, value: Any) -> Any:
        return value  # text, bytes or (PostgreSQL json columns) decoded values: codec.loads

    def db_value(self, value: Any) -> Any:
        return value  # already JSON text, written by codec.dumps

    def ddl_datatype(self, ctx: Any) -> pw.SQL:
        dialect = dialect_for(self.model._meta.database)
        if self.sql_default is not None and dialect.json_text_defaults:
            return pw.SQL(f"{dialect.json_text_type} DEFAULT '{self.sql_default}'")
        return pw.SQL(dialect.json_text_type)


def _default(value: str | int) -> list[pw.Node]:
    literal = f"'{value}'" if isinstance(value, str) and value != "FALSE" else str(value)
    return [pw.SQL(f"DEFAULT {literal}")]


def _counter(column: str) -> pw.IntegerField:
    return pw.IntegerField(column_name=column, default=0, constraints=_default(0))


class JobRow(pw.Model):
    id = pw.CharField(max_length=36, primary_key=True)
    status = pw.CharField(max_length=20)
    config = JsonTextField()
    batches = JsonTextField(default="[]", sql_default="[]")
    total_records = _counter("totalRecords")
    started_at = pw.BigIntegerField(column_name="startedAt", null=True)
    completed_at = pw.BigIntegerField(column_name="completedAt", null=True)
    distributed = pw.BooleanField(default=False, constraints=_default("FALSE"))


class RecordRow(pw.Model):
    id = pw.AutoField()
    job_id = pw.CharField(max_length=36, column_name="jobId")
    batch_id = pw.CharField(max_length=36, column_name="batchId")
    record_index = pw.IntegerField(column_name="recordIndex")
    status = pw.CharField(max_length=10)
    raw = JsonTextField()
    parsed = JsonTextField()
    errors = JsonTextField(default="[]", sql_default="[]")
    processing_error = pw.TextField(column_name="processingError", null=True)


class BatchRow(pw.Model):
    id = pw.CharField(max_length=36, primary_key=True)
    job_id = pw.CharField(max_length=36, column_name="jobId")
    batch_index = pw.IntegerField(column_name="batchIndex")
    status = pw.CharField(max_length=20, default="PENDING", constraints=_default("PENDING"))
    worker_id = pw.CharField(max_length=128, column_name="workerId", null=True)
    claimed_at = pw.BigIntegerField(column_name="claimedAt", null=True)
    record_start_index = _counter("recordStartIndex")
    record_end_index = _counter("recordEndIndex")
    processed_count = _counter("processedCount")
    failed_count = _counter("failedCount")
    version = _counter("version")


@dataclass(frozen=True)
class Tables:
    """One store's three models."""

    jobs: type[JobRow]
    records: type[RecordRow]
    batches: type[BatchRow]

    @property
    def all(self) -> list[type[pw.Model]]:
        return [self.jobs, self.records, self.batches]


def _bind(
    base: type[pw.Model],
    database: pw.Database | pw.DatabaseProxy,
    table_name: str,
    table_settings: list[str],
) -> Any:
    """A subclass of ``base`` bound to ``database`` under ``table_name``."""
    meta = type(
        "Meta",
        (),
        {"database": database, "table_name": table_name, "table_settings": table_settings},
    )
    return type(base.__name__, (base,), {"Meta": meta, "__module__": __name__})


def build_tables(
    database: pw.Database | pw.DatabaseProxy,
    prefix: str,
    *,
    table_settings: list[str] | None = None,
) -> Tables:
    """Bind the three models to ``database`` with ``prefix``.

    Indexes are named as Sequelize names them, so tables the TypeScript adapters created
    and ours are the same schema.
    """
    settings = table_settings or []
    jobs: type[JobRow] = _bind(JobRow, database, f"{prefix}jobs", settings)
    records: type[RecordRow] = _bind(RecordRow, database, f"{prefix}records", settings)
    batches: type[BatchRow] = _bind(BatchRow, database, f"{prefix}batches", settings)
    for model, columns, unique in (
        (records, (records.job_id, records.status), False),
        (records, (records.job_id, records.batch_id), False),
        (records, (records.job_id, records.record_index), True),
        (batches, (batches.job_id, batches.status), False),
        (batches, (batches.job_id, batches.batch_index), True),
    ):
        suffix = "_".join(_snake(c.column_name) for c in columns)
        name = f"{model._meta.table_name}_{suffix}"
        model.add_index(pw.ModelIndex(model, columns, unique=unique, name=name))
    return Tables(jobs, records, batches)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
