"""``retry``, a new job of another job's failed (or invalid) records, and ``preview``, a
schema tried on the first records of a file with nothing written anywhere."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from typing import Any

from ..engine import prepare_retry_job, preview_records
from ..model import RecordStatus
from .common import PROG, database_url, find_job, hint, open_store, usage_error
from .job_commands import file_format
from .render import print_columns, print_json, print_rows
from .worker_setup import load_worker_schema

#: Errors ``preview`` lists; ``--json`` has them all.
SHOWN_ERRORS = 20


def cmd_retry(args: argparse.Namespace) -> int:
    """A new job from the raw data of a job's failed records (``--invalid``: its invalid
    ones too); print its id."""
    store = open_store(args)
    find_job(store, args.job_id, database_url(args))
    statuses = [RecordStatus.FAILED, *([RecordStatus.INVALID] if args.invalid else [])]
    result = prepare_retry_job(store, args.job_id, statuses=statuses, batch_size=args.batch_size)
    if args.json:
        print_json(
            {
                "jobId": result.job_id,
                "retryOf": args.job_id,
                "statuses": [s.value for s in statuses],
                "totalRecords": result.total_records,
                "totalBatches": result.total_batches,
            }
        )
        return 0
    which = " and ".join(s.value for s in statuses)
    print(
        f"prepared {result.total_records} {which} records of job {args.job_id} in "
        f"{result.total_batches} batches; work them with `{hint(args, 'work', result.job_id)}`",
        file=sys.stderr,
    )
    print(result.job_id)
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """Validate the first ``--limit`` records of FILE against ``--schema``."""
    # Local imports keep `preview` free of any database: it opens none.
    from ..engine.sources import open_source

    if args.schema is None:
        raise usage_error("preview needs --schema MODULE:MODEL")
    schema = load_worker_schema(args.schema)
    kind = file_format(args)
    with open_source(args.file, kind, delimiter=args.delimiter, encoding=args.encoding) as rows:
        if rows.header_warning:
            print(f"{PROG}: warning: {rows.header_warning}", file=sys.stderr)

        def records() -> Iterator[dict[str, Any]]:
            for row in rows:
                yield row.as_record()

        result = preview_records(records(), schema=schema, limit=args.limit)
    errors = [
        {"index": index, "field": e.field, "code": e.code, "message": e.message}
        for index, e in result.errors
    ]
    if args.json:
        summary = {"total": result.total, "valid": result.valid, "invalid": result.invalid}
        print_json({**summary, "columns": rows.columns, "errors": errors})
        return 0
    print_columns(rows.columns)
    print_rows([["records", result.total], ["valid", result.valid], ["invalid", result.invalid]])
    if errors:
        print()
        shown = [[e["index"], e["field"], e["code"], e["message"]] for e in errors[:SHOWN_ERRORS]]
        print_rows([["record", "field", "code", "message"], *shown])
        if len(errors) > SHOWN_ERRORS:
            print(f"... and {len(errors) - SHOWN_ERRORS} more errors (all of them with --json)")
    return 0
