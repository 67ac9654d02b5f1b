"""The one entry point for a Worker or a prepare in a child process, which tests then kill.

Run from the repository root (``cwd=REPO``) as ``python -m tests.support.child COMMAND ...``;
``argv(COMMAND, ...)`` builds that command line. Each command prints its result as one JSON
line on stdout on a normal exit; a process killed with SIGKILL prints nothing, so the test
knows which results are complete.

``work --url U --prefix P --job-id J --lease-ms N [--worker-id W] [--log F]
[--block-at I --marker M] [--record-ms N]`` runs a Worker on the job and prints its
WorkerSummary. Its processor does nothing (so a run measures coordination, not work),
unless told to: with ``--log`` it appends each record index it is given to that file; with
``--block-at``, at that record it creates ``--marker`` and sleeps, so the test can kill it
at a known point mid-batch; with ``--record-ms`` each record takes that long. Used by
support/faults.py's WorkerPool (kill storms, session kills) and by
integration/test_worker_processes.py.

``work ... --import-into TABLE [--transactional] [--batch-ms N] [--block-batch I --marker
M]`` runs a batch processor instead (support/imports.py's ``importer``, schema
``Numbered``): one row per valid record into TABLE, then each batch takes ``--batch-ms``;
after inserting the rows of batch ``--block-batch`` it creates ``--marker`` and sleeps.

``prepare --url U --prefix P --job-id J --records N --batch-size B [--block-at I --marker M]``
prepares ``N`` records ``{"n": i}`` under ``J`` and prints the PrepareResult; asked for
record ``--block-at``, the source creates ``--marker`` and sleeps, so the test can kill it
mid-stream.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

from batchactions_peewee import (
    BatchContext,
    PeeweeStateStore,
    ProcessingContext,
    Worker,
    prepare_job,
)

from .backends import open_database
from .imports import Numbered, imported_table, importer

MODULE = "tests.support.child"
BLOCK_S = 600.0  # far longer than any test waits: the process is killed first


def argv(command: str, *args: str) -> list[str]:
    """The command line of a child running ``command`` with ``args``; run it with
    ``cwd=REPO``."""
    return [sys.executable, "-m", MODULE, command, *args]


def _store(args: argparse.Namespace) -> PeeweeStateStore:
    return PeeweeStateStore(open_database(args.url), table_prefix=args.prefix)


def _block(args: argparse.Namespace) -> None:
    """Tell the test we got this far, then wait to be killed."""
    Path(args.marker).touch()
    time.sleep(BLOCK_S)


def noop(record: dict[str, Any], context: ProcessingContext) -> None:
    return None


def work(args: argparse.Namespace) -> None:
    with ExitStack() as cleanup:
        log: IO[str] | None = None
        if args.log is not None:
            log = cleanup.enter_context(Path(args.log).open("a", encoding="utf-8"))

        def processor(record: dict[str, Any], context: ProcessingContext) -> None:
            if log is not None:
                log.write(f"{context.record_index}\n")
                log.flush()
            if context.record_index == args.block_at:
                _block(args)
            if args.record_ms:
                time.sleep(args.record_ms / 1000)

        store = _store(args)
        cleanup.callback(store.database.close)
        if args.import_into is not None:
            summary = _import(args, store)
            print(json.dumps(dataclasses.asdict(summary)), flush=True)
            return
        plain = log is None and args.block_at is None and not args.record_ms
        worker = Worker(
            store,
            noop if plain else processor,
            worker_id=args.worker_id,
            lease_timeout_ms=args.lease_ms,
        )
        summary = worker.run(args.job_id)
    print(json.dumps(dataclasses.asdict(summary)), flush=True)


def _import(args: argparse.Namespace, store: PeeweeStateStore) -> Any:
    def then(records: list[dict[str, Any]], context: BatchContext) -> None:
        if context.batch_index == args.block_batch:
            _block(args)  # its rows are inserted (committed, unless transactional)
        if args.batch_ms:
            time.sleep(args.batch_ms / 1000)

    worker = Worker(
        store,
        batch_processor=importer(imported_table(args.import_into), then),
        transactional=args.transactional,
        schema=Numbered,
        worker_id=args.worker_id,
        lease_timeout_ms=args.lease_ms,
    )
    return worker.run(args.job_id)


def prepare(args: argparse.Namespace) -> None:
    def source() -> Iterator[dict[str, Any]]:
        for i in range(args.records):
            if i == args.block_at:
                _block(args)
            yield {"n": i}

    store = _store(args)
    try:
        result = prepare_job(store, source(), batch_size=args.batch_size, job_id=args.job_id)
    finally:
        store.database.close()
    print(json.dumps(dataclasses.asdict(result)), flush=True)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    commands = parser.add_subparsers(dest="command", required=True)
    work_args = commands.add_parser("work", help="run a Worker on the job")
    prepare_args = commands.add_parser("prepare", help="prepare a job of --records records")
    for sub, run in ((work_args, work), (prepare_args, prepare)):
        sub.set_defaults(run=run)
        sub.add_argument("--url", required=True)
        sub.add_argument("--prefix", required=True)
        sub.add_argument("--job-id", required=True)
        sub.add_argument("--block-at", type=int, help="record index to block at (needs --marker)")
        sub.add_argument("--marker", help="file created when the child blocks")
    work_args.add_argument("--lease-ms", type=int, required=True)
    work_args.add_argument("--worker-id", help="default: the Worker's own unique id")
    work_args.add_argument("--log", help="file to append each record index to")
    work_args.add_argument("--record-ms", type=int, default=0, help="time each record takes")
    work_args.add_argument("--import-into", metavar="TABLE", help="a batch processor's table")
    work_args.add_argument("--transactional", action="store_true", help="with --import-into")
    work_args.add_argument("--batch-ms", type=int, default=0, help="time each batch takes")
    work_args.add_argument("--block-batch", type=int, help="batch index to block at")
    prepare_args.add_argument("--records", type=int, required=True)
    prepare_args.add_argument("--batch-size", type=int, required=True)
    return parser


def main() -> None:
    cli = parser()
    args = cli.parse_args()
    if args.block_at is not None and args.marker is None:
        cli.error("--block-at needs --marker")
    if getattr(args, "block_batch", None) is not None and args.marker is None:
        cli.error("--block-batch needs --marker")
    args.run(args)


if __name__ == "__main__":
    main()
