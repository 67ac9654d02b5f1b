"""A job's failed and invalid records as an export, CSV or JSON Lines: the same lines for
the ``failed`` command and the dashboard's downloads. Records are read a page at a time,
so an export of any size holds one page in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from .model import ProcessedRecord
from .store import PeeweeStateStore

#: Records read per statement.
PAGE = 500


def record_error(record: ProcessedRecord) -> str:
    """A failed or invalid record's errors as one text."""
    if record.processing_error is not None:
        return record.processing_error
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in record.errors)


def cell(value: Any) -> str:
    """A raw value as a CSV cell: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def failed_records(
    store: PeeweeStateStore,
    job_id: str,
    *,
    offset: int = 0,
    limit: int | None = None,
    after_index: int = -1,
) -> Iterator[ProcessedRecord]:
    """The job's failed and invalid records by index, from above ``after_index``, the
    first ``offset`` skipped, at most ``limit`` of them (all when None)."""
    after, left = after_index, limit
    while left is None or left > 0:
        size = PAGE if left is None else min(PAGE, left)
        page = store.get_failed_records_page(job_id, after_index=after, limit=size, offset=offset)
        yield from page
        if len(page) < size:
            return
        after, offset = page[-1].index, 0  # the next pages go on from the last index
        left = None if left is None else left - len(page)


def failed_json(record: ProcessedRecord) -> dict[str, Any]:
    """One record as a JSON Lines export has it."""
    return {
        "recordIndex": record.index,
        "status": record.status.value,
        "error": record_error(record),
        "errors": [e.to_json_dict() for e in record.errors],
        "processingError": record.processing_error,
        "raw": record.raw,
    }


def failed_jsonl(
    store: PeeweeStateStore, job_id: str, *, offset: int = 0, limit: int | None = None
) -> Iterator[str]:
    """The records of ``failed_records`` as JSON Lines, one line each."""
    for record in failed_records(store, job_id, offset=offset, limit=limit):
        yield json.dumps(failed_json(record), ensure_ascii=False) + "\n"


def failed_csv(
    store: PeeweeStateStore, job_id: str, *, offset: int = 0, limit: int | None = None
) -> Iterator[str]:
    """The records of ``failed_records`` as CSV: a header line, then one line each."""
    # Two passes, so the header can hold every column any failed record has while the
    # records themselves are only ever read a page at a time.
    columns: dict[str, None] = {}
    for record in failed_records(store, job_id, offset=offset, limit=limit):
        columns.update(dict.fromkeys(record.raw))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(["recordIndex", "status", "error", *columns])
    for record in failed_records(store, job_id, offset=offset, limit=limit):
        values = [cell(record.raw.get(c)) for c in columns]
        yield line([record.index, record.status.value, record_error(record), *values])
