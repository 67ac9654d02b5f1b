"""``--batch-processor`` and ``--transactional`` on the command line: a job remembers its
batch processor as it does its processor, ``work`` uses it, one processor at a time, and
the hints say what to paste."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..support.cli import Target, as_json, cli, ok, pasted
from ..support.imports import Imported, counts, user_table
from ..support.stores import new_prefix
from .test_cli import People, write_people

#: The batch processor of these tests: the valid people into a table of the user's (named
#: by BATCH_CASE_TABLE), refusing those the record processor of cli_case refuses too.
BATCH_MODULE = """
import os

import peewee as pw


class Imported(pw.Model):
    n = pw.IntegerField()
    batch_index = pw.IntegerField()

    class Meta:
        table_name = os.environ["BATCH_CASE_TABLE"]


def import_people(records, context):
    refused = {
        index: f"refused {record['email']}"
        for index, record in zip(context.record_indexes, records)
        if record["email"].endswith("@fail.example")
    }
    rows = [
        {"n": index, "batch_index": context.batch_index}
        for index in context.record_indexes
        if index not in refused
    ]
    with context.database.bind_ctx([Imported]):
        Imported.insert_many(rows).execute()
    return refused
"""

CODE = ("--schema", "cli_case:Person", "--batch-processor", "batch_case:import_people")


@contextmanager
def people_and_table(directory: Path, target: Target) -> Iterator[tuple[People, type[Imported]]]:
    """people.csv, cli_case.py, batch_case.py and the user's table the batch processor
    imports into (BATCH_CASE_TABLE)."""
    people = write_people(directory)
    (directory / "batch_case.py").write_text(BATCH_MODULE)
    _, database = target.store()
    try:
        with user_table(database, f"{new_prefix()}imported") as table:
            yield people, table
    finally:
        database.close()


def _env(table: type[Imported]) -> dict[str, str]:
    return {"BATCH_CASE_TABLE": table._meta.table_name}


def _counts(target: Target, table: type[Imported]) -> tuple[int, int]:
    _, database = target.store()
    try:
        return counts(database, table)
    finally:
        database.close()


def _figures(report: dict[str, object]) -> tuple[object, ...]:
    return (report["processedRecords"], report["invalidRecords"], report["failedRecords"])


def test_work_uses_the_batch_processor_the_job_was_prepared_with(
    tmp_path: Path, target: Target
) -> None:
    with people_and_table(tmp_path, target) as (people, table):
        env = _env(table)
        prepare = ("prepare", "people.csv", "--batch-size", "25", *CODE, *target.args)
        job_id = ok(cli(*prepare, cwd=tmp_path, env=env)).stdout.strip()
        store, database = target.store()
        try:
            job = store.get_job_state(job_id)
        finally:
            database.close()
        assert job is not None and job.config.model_extra == {
            "source": "people.csv",
            "code": {"schema": "cli_case:Person", "batchProcessor": "batch_case:import_people"},
        }
        work = ("work", job_id, "--transactional", "--workers", "2", "--json", *target.args)
        report = as_json(cli(*work, cwd=tmp_path, env=env))
        assert _figures(report) == (people.processed, people.invalid, people.failed)
        assert report["status"] == "COMPLETED"
        assert _counts(target, table) == (people.processed, people.processed)


def test_run_takes_a_transactional_batch_processor(tmp_path: Path, sqlite_target: Target) -> None:
    with people_and_table(tmp_path, sqlite_target) as (people, table):
        run = ("run", "people.csv", *CODE, "--transactional", "--json", *sqlite_target.args)
        report = as_json(cli(*run, "--workers", "2", cwd=tmp_path, env=_env(table)))
        assert _figures(report) == (people.processed, people.invalid, people.failed)
        assert _counts(sqlite_target, table) == (people.processed, people.processed)


def test_a_processor_and_a_batch_processor_together_are_a_usage_error(
    tmp_path: Path, sqlite_target: Target
) -> None:
    with people_and_table(tmp_path, sqlite_target) as (_, table):
        both = ("--processor", "cli_case:process", "--batch-processor", "batch_case:import_people")
        for command in ("prepare", "run"):
            refused = cli(command, "people.csv", *both, *sqlite_target.args, cwd=tmp_path)
            assert refused.returncode == 2, refused.stderr
            [line] = refused.stderr.splitlines()
            assert "--processor and --batch-processor exclude each other" in line
        store, database = sqlite_target.store()
        try:
            assert store.missing_tables() == store.table_names(), "nothing was written"
        finally:
            database.close()
        assert _counts(sqlite_target, table) == (0, 0)


def test_transactional_without_a_batch_processor_is_a_usage_error(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_people(tmp_path)
    for extra in ((), ("--processor", "cli_case:process")):
        refused = cli(
            "run", "people.csv", "--transactional", *extra, *sqlite_target.args, cwd=tmp_path
        )
        assert refused.returncode == 2
        assert "--transactional needs a --batch-processor" in refused.stderr


def test_a_bad_batch_processor_is_a_usage_error(tmp_path: Path, sqlite_target: Target) -> None:
    write_people(tmp_path)
    for spec, message in (
        ("cli_case:missing", "--batch-processor cli_case:missing: cli_case has no missing"),
        ("cli_case:not_callable", "--batch-processor cli_case:not_callable: not a function"),
    ):
        prepare = ("prepare", "people.csv", "--batch-processor", spec, *sqlite_target.args)
        refused = cli(*prepare, cwd=tmp_path)
        assert refused.returncode == 2 and message in refused.stderr


def test_the_processor_given_to_work_wins_over_the_other_kind_the_job_remembers(
    tmp_path: Path, sqlite_target: Target
) -> None:
    with people_and_table(tmp_path, sqlite_target) as (people, table):
        env, args = _env(table), sqlite_target.args
        # The job remembers a batch processor; work is given a record processor.
        prepare = ("prepare", "people.csv", *CODE, *args)
        job_id = ok(cli(*prepare, cwd=tmp_path, env=env)).stdout.strip()
        work = ("work", job_id, "--processor", "cli_case:process", "--json", *args)
        result = ok(cli(*work, cwd=tmp_path, env=env))
        assert (
            "--processor cli_case:process, not the job's own --batch-processor "
            "batch_case:import_people" in result.stderr
        )
        report = as_json(subprocess.CompletedProcess([], 0, result.stdout, ""))
        assert _figures(report) == (people.processed, people.invalid, people.failed)
        assert _counts(sqlite_target, table) == (0, 0), "the job's batch processor did not run"

        # And the other way round.
        prepare = ("prepare", "people.csv", "--schema", "cli_case:Person")
        job_id = ok(cli(*prepare, "--processor", "cli_case:process", *args, cwd=tmp_path)).stdout
        work = ("work", job_id.strip(), "--batch-processor", "batch_case:import_people")
        result = ok(cli(*work, "--json", *args, cwd=tmp_path, env=env))
        assert (
            "--batch-processor batch_case:import_people, not the job's own --processor "
            "cli_case:process" in result.stderr
        )
        assert _counts(sqlite_target, table) == (people.processed, people.processed)


def test_the_hint_to_go_on_repeats_transactional(tmp_path: Path, sqlite_target: Target) -> None:
    with people_and_table(tmp_path, sqlite_target) as (people, table):
        env = _env(table)
        prepare = ("prepare", "people.csv", "--batch-size", "50", *CODE, *sqlite_target.args)
        job_id = ok(cli(*prepare, cwd=tmp_path, env=env)).stdout.strip()
        first = ("work", job_id, "--transactional", "--max-batches", "1", *sqlite_target.args)
        stopped = ok(cli(*first, cwd=tmp_path, env=env))
        again = pasted(stopped.stderr, "stopped at the limit; go on with")
        assert again == ["work", job_id, "--transactional", *sqlite_target.args]
        report = as_json(cli(*again, "--json", cwd=tmp_path, env=env))
        assert report["status"] == "COMPLETED"
        assert _counts(sqlite_target, table) == (people.processed, people.processed)
