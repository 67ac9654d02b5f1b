"""0001: the jobs, records and batches tables, as batchactions-peewee 0.1 made them.

Frozen: the models below are a copy of the schema at the time, deliberately independent of
``store/tables.py``, so this step means the same thing forever. A table that exists already (made
by ``create_tables()`` or by the TypeScript adapters) is left exactly as it is.
"""

from __future__ import annotations

from typing import Any

import peewee as pw

from batchactions_peewee.store.dialects import dialect_for
from batchactions_peewee.store.schema import table_prefix


class _JsonText(pw.TextField):
    """JSON text: LONGTEXT without a default on MySQL/MariaDB, TEXT elsewhere."""

    def __init__(self, *args: Any, sql_default: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sql_default = sql_default

    def ddl_datatype(self, ctx: Any) -> pw.SQL:
        if dialect_for(self.model._meta.database).json_text_type == "LONGTEXT":  # MySQL
            return pw.SQL("LONGTEXT")
        if self.sql_default is not None:
            return pw.SQL(f"TEXT DEFAULT '{self.sql_default}'")
        return pw.SQL("TEXT")


def _default(literal: str) -> list[pw.Node]:
    return [pw.SQL(f"DEFAULT {literal}")]


def _counter(column: str) -> pw.IntegerField:
    return pw.IntegerField(column_name=column, default=0, constraints=_default("0"))


def _models(db: pw.Database, prefix: str) -> list[type[pw.Model]]:
    settings = dialect_for(db).table_settings()

    class Base(pw.Model):
        class Meta:
            database = db
            table_settings = settings

    class Jobs(Base):
        id = pw.CharField(max_length=36, primary_key=True)
        status = pw.CharField(max_length=20)
        config = _JsonText()
        batches = _JsonText(default="[]", sql_default="[]")
        total_records = _counter("totalRecords")
        started_at = pw.BigIntegerField(column_name="startedAt", null=True)
        completed_at = pw.BigIntegerField(column_name="completedAt", null=True)
        distributed = pw.BooleanField(default=False, constraints=_default("FALSE"))

        class Meta:
            table_name = f"{prefix}jobs"

    class Records(Base):
        id = pw.AutoField()
        job_id = pw.CharField(max_length=36, column_name="jobId")
        batch_id = pw.CharField(max_length=36, column_name="batchId")
        record_index = pw.IntegerField(column_name="recordIndex")
        status = pw.CharField(max_length=10)
        raw = _JsonText()
        parsed = _JsonText()
        errors = _JsonText(default="[]", sql_default="[]")
        processing_error = pw.TextField(column_name="processingError", null=True)

        class Meta:
            table_name = f"{prefix}records"

    class Batches(Base):
        id = pw.CharField(max_length=36, primary_key=True)
        job_id = pw.CharField(max_length=36, column_name="jobId")
        batch_index = pw.IntegerField(column_name="batchIndex")
        status = pw.CharField(max_length=20, default="PENDING", constraints=_default("'PENDING'"))
        worker_id = pw.CharField(max_length=128, column_name="workerId", null=True)
        claimed_at = pw.BigIntegerField(column_name="claimedAt", null=True)
        record_start_index = _counter("recordStartIndex")
        record_end_index = _counter("recordEndIndex")
        processed_count = _counter("processedCount")
        failed_count = _counter("failedCount")
        version = _counter("version")

        class Meta:
            table_name = f"{prefix}batches"

    for model, columns, unique in (
        (Records, ("jobId", "status"), False),
        (Records, ("jobId", "batchId"), False),
        (Records, ("jobId", "recordIndex"), True),
        (Batches, ("jobId", "status"), False),
        (Batches, ("jobId", "batchIndex"), True),
    ):
        fields = [f for c in columns for f in model._meta.sorted_fields if f.column_name == c]
        name = f"{model._meta.table_name}_{'_'.join(_snake(c) for c in columns)}"
        model.add_index(pw.ModelIndex(model, fields, unique=unique, name=name))
    return [Jobs, Records, Batches]


def _snake(column: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in column)


def up(migrator: Any, db: pw.Database) -> None:
    for model in _models(db, table_prefix()):
        if not db.table_exists(model._meta.table_name):
            model.create_table(safe=False)
