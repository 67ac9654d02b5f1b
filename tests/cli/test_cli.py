"""The command line, driven as a user drives it: ``python -m batchactions_peewee ...`` in a
subprocess, on every backend where it matters, every error path included."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.cli import URL_ENV, build_parser, redact

from ..support.backends import open_database
from ..support.cli import TIMEOUT_S, Target, as_json, cli, ok, pasted
from ..support.schema import schema_snapshot
from ..support.stores import new_prefix

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")

CASE_MODULE = """
import time

import pydantic


class Person(pydantic.BaseModel):
    email: str = pydantic.Field(pattern=r"^[^@ ]+@[^@ ]+$")
    age: int


def process(record, context):
    if record["email"].endswith("@fail.example"):
        raise RuntimeError(f"refused {record['email']}")


def slow(record, context):
    time.sleep(0.01)
    if record["n"] % 10 == 9:
        raise RuntimeError("nine")


not_callable = 42
"""


@dataclass(frozen=True)
class People:
    """A CSV of people with bad rows of every kind, and what a run must make of it."""

    path: Path
    records: int
    processed: int
    invalid: int
    failed: int


def write_people(directory: Path, rows: int = 200) -> People:
    """``rows`` people (some with a bad email or age, some the processor refuses), then two
    ragged rows, one row that is not UTF-8 and a blank line: rows + 3 records."""
    (directory / "cli_case.py").write_text(CASE_MODULE)
    lines = [b"email,age"]
    invalid = failed = 0
    for i in range(rows):
        email, age = f"user{i}@x.io", str(20 + i % 50)
        if i % 20 == 5:
            email, invalid = "not an email", invalid + 1
        elif i % 50 == 7:
            age, invalid = "old", invalid + 1
        elif i % 40 == 13:
            email, failed = f"user{i}@fail.example", failed + 1
        lines.append(f"{email},{age}".encode())
        if i == 100:
            lines += [b"extra@x.io,1,2", b"", b"short@x.io", "Jos\xe9@x.io,3".encode("latin-1")]
    path = directory / "people.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    invalid += 3
    records = rows + 3
    return People(path, records, records - invalid - failed, invalid, failed)


def run_people(
    directory: Path, target: Target, *extra: str, workers: int = 2
) -> tuple[People, dict[str, Any]]:
    people = write_people(directory)
    report = as_json(
        cli(
            "run",
            "people.csv",
            "--schema",
            "cli_case:Person",
            "--processor",
            "cli_case:process",
            "--workers",
            str(workers),
            "--batch-size",
            "25",
            "--json",
            *target.args,
            *extra,
            cwd=directory,
        )
    )
    return people, report


# -- run, prepare, work ---------------------------------------------------------------------


def test_run_processes_a_csv_with_two_worker_processes_and_reports_every_record(
    tmp_path: Path, target: Target
) -> None:
    people, report = run_people(tmp_path, target)
    assert UUID.match(report["jobId"])
    assert report["status"] == "COMPLETED"
    assert (
        report["totalRecords"],
        report["processedRecords"],
        report["invalidRecords"],
        report["failedRecords"],
    ) == (people.records, people.processed, people.invalid, people.failed)
    assert report["totalBatches"] == -(-people.records // 25)
    workers = report["workers"]
    assert len(workers) == 2
    assert len({w["workerId"] for w in workers}) == 2
    assert all(w["error"] is None for w in workers)
    assert sum(w["batches"] for w in workers) == report["totalBatches"]
    # One definition of each figure: the workers' invalid and failed add up to the job's.
    assert sum(w["processed"] for w in workers) == people.processed
    assert sum(w["invalid"] for w in workers) == people.invalid
    assert sum(w["failed"] for w in workers) == people.failed
    assert report["pendingRecords"] == 0 and report["percentage"] == 100
    assert report["thisRun"]["records"] == people.records
    assert sum(w["finalized"] for w in workers) == 1

    store, database = target.store()
    try:
        failed = store.get_failed_records(report["jobId"])
    finally:
        database.close()
    errors = {r.index: r for r in failed}
    ragged = errors[101]  # the row after person 100
    assert ragged.status.value == "invalid"
    assert ragged.raw == {
        "_line": 103,
        "_raw": "extra@x.io,1,2",
        "_error": "line 103: 3 fields where the header has 2",
    }
    assert [e.message for e in ragged.errors] == ["line 103: 3 fields where the header has 2"]
    assert errors[103].raw["_error"] == "line 106: not UTF-8 (byte 0xe9 at position 4)"
    assert errors[13].processing_error == "refused user13@fail.example"
    assert [(e.field, e.code) for e in errors[5].errors] == [("email", "PATTERN_MISMATCH")]


def test_run_prints_a_summary_table_and_the_job_id_and_no_progress_bar_without_a_tty(
    tmp_path: Path, sqlite_target: Target
) -> None:
    people = write_people(tmp_path)
    result = ok(
        cli(
            "run",
            people.path.name,
            "--schema",
            "cli_case:Person",
            "--workers",
            "1",
            *sqlite_target.args,
            cwd=tmp_path,
        )
    )
    lines = result.stdout.splitlines()
    job_id = lines[-1].removeprefix("job id: ")
    assert UUID.match(job_id)
    assert re.search(r"^status +COMPLETED$", result.stdout, re.M)
    assert re.search(rf"^records +{people.records}$", result.stdout, re.M)
    assert re.search(rf"^invalid +{people.invalid}$", result.stdout, re.M)
    assert re.search(rf"^processed +{people.processed + people.failed}$", result.stdout, re.M)
    assert f"failed {job_id} --output failed.csv" in result.stdout
    assert "\r" not in result.stderr and "\x1b" not in result.stderr
    assert result.stderr.startswith(f"job {job_id}: {people.records} records (3 unreadable)")


def test_prepare_prints_only_the_job_id_and_two_workers_finish_the_job(
    tmp_path: Path, target: Target
) -> None:
    people = write_people(tmp_path)
    prepared = ok(
        cli(
            "prepare",
            "people.csv",
            "--batch-size",
            "20",
            "--schema",
            "cli_case:Person",
            *target.args,
            cwd=tmp_path,
        )
    )
    job_id = prepared.stdout.strip()
    assert UUID.match(job_id) and prepared.stdout == job_id + "\n"
    assert "in 11 batches" in prepared.stderr

    command = [sys.executable, "-m", "batchactions_peewee", "work", job_id, "--json"]
    command += ["--schema", "cli_case:Person", "--processor", "cli_case:process", *target.args]
    machines = [
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    reports = []
    for machine in machines:
        out, err = machine.communicate(timeout=TIMEOUT_S)
        assert machine.returncode == 0, err.decode()
        reports.append(json.loads(out))
    assert all(r["status"] == "COMPLETED" for r in reports)
    summaries = [w for r in reports for w in r["workers"]]
    assert sum(w["batches"] for w in summaries) == 11
    assert sum(w["finalized"] for w in summaries) == 1
    status = as_json(cli("status", job_id, "--json", *target.args, cwd=tmp_path))
    assert status["status"] == "COMPLETED"
    assert status["batches"] == {"COMPLETED": 11}
    assert status["records"] == {
        "processed": people.processed,
        "invalid": people.invalid,
        "failed": people.failed,
    }


def test_a_jsonl_file_with_broken_lines_is_read_to_the_end_and_its_bad_lines_are_invalid(
    tmp_path: Path, sqlite_target: Target
) -> None:
    (tmp_path / "events.ndjson").write_bytes(
        b'{"id": 1}\n{"id": 2,\n[3]\n{"id": NaN}\n\n{"id": "\xff"}\n{"id": 6}\n'
    )
    report = as_json(
        cli("run", "events.ndjson", "--workers", "1", "--json", *sqlite_target.args, cwd=tmp_path)
    )
    assert (report["totalRecords"], report["processedRecords"], report["invalidRecords"]) == (
        6,
        2,
        4,
    )
    exported = ok(cli("failed", report["jobId"], "--json", *sqlite_target.args, cwd=tmp_path))
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [(x["recordIndex"], x["status"], x["error"]) for x in lines] == [
        (
            1,
            "invalid",
            "line 2: not JSON: Expecting property name enclosed in double quotes at column 10",
        ),
        (2, "invalid", "line 3: an array, not a JSON object"),
        (3, "invalid", "line 4: not JSON: NaN is not a JSON value"),
        (4, "invalid", "line 6: not UTF-8 (byte 0xff at position 9)"),
    ]
    assert lines[3]["raw"] == {"_line": 6, "_raw": '{"id": "\\xff"}', "_error": lines[3]["error"]}


def test_prepare_reads_standard_input_when_file_is_a_dash(
    tmp_path: Path, sqlite_target: Target
) -> None:
    rows = "".join(json.dumps({"n": n}) + "\n" for n in range(7))
    prepared = as_json(
        cli(
            "prepare",
            "-",
            "--format",
            "jsonl",
            "--batch-size",
            "3",
            "--json",
            *sqlite_target.args,
            cwd=tmp_path,
            stdin=rows,
        )
    )
    assert (prepared["totalRecords"], prepared["totalBatches"]) == (7, 3)


def test_stop_on_error_fails_the_job_and_exits_with_1(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_people(tmp_path)
    result = cli(
        "run",
        "people.csv",
        "--schema",
        "cli_case:Person",
        "--workers",
        "1",
        "--stop-on-error",
        "--json",
        *sqlite_target.args,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["status"] == "FAILED"


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_ctrl_c_stops_the_workers_after_their_batch_and_work_resumes_the_job(
    tmp_path: Path, sqlite_target: Target
) -> None:
    write_people(tmp_path)
    (tmp_path / "numbers.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(100)))
    command = [sys.executable, "-m", "batchactions_peewee", "run", "numbers.jsonl"]
    command += ["--processor", "cli_case:slow", "--batch-size", "10", "--workers", "1"]
    run = subprocess.Popen(
        [*command, "--job-id", "interrupted", *sqlite_target.args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store, database = sqlite_target.store()
    try:

        def a_batch_is_done() -> bool:
            try:
                return store.get_distributed_status("interrupted").completed_batches > 0
            except Exception:
                return False  # not prepared yet

        _wait_for(a_batch_is_done)
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=TIMEOUT_S)
        assert run.returncode == 130, err
        status = store.get_distributed_status("interrupted")
        assert status.processing_batches == 0  # the batch in hand was finished, not abandoned
        assert 0 < status.completed_batches < 10

        # Pasted as printed: the job remembers its processor, the hint its database.
        resume = pasted(err, "resume with")
        assert resume[:2] == ["work", "interrupted"] and "--processor" not in resume
        resumed = as_json(cli(*resume, "--json", cwd=tmp_path))
        assert resumed["failedRecords"] == 10, "the remembered processor ran on every record"
        assert resumed["status"] == "COMPLETED"
        assert resumed["processedRecords"] == 90
        assert resumed["workers"][0]["batches"] == 10 - status.completed_batches
    finally:
        database.close()


def test_a_progress_bar_is_drawn_on_stderr_when_it_is_a_terminal(
    tmp_path: Path, sqlite_target: Target
) -> None:
    pty = pytest.importorskip("pty")
    write_people(tmp_path)
    (tmp_path / "numbers.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(100)))
    terminal, stderr = pty.openpty()
    command = [sys.executable, "-m", "batchactions_peewee", "run", "numbers.jsonl"]
    command += ["--workers", "1", "--processor", "cli_case:slow", "--batch-size", "10"]
    run = subprocess.Popen(
        [*command, *sqlite_target.args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    os.close(stderr)
    drawn = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # every writer closed the terminal
            break
        if not chunk:
            break
        drawn += chunk
    os.close(terminal)
    assert run.wait(timeout=TIMEOUT_S) == 0
    assert run.stdout is not None and b"job id: " in run.stdout.read()
    frames = [f for f in drawn.decode().split("\r") if f.startswith("[")]
    assert frames, drawn
    bar = r"\[#{20}\] 100%  100/100 records, 0 invalid, 10 failed  \d+/s  ETA -"
    assert re.match(bar, frames[-1])
    assert all(re.match(r"\[[#.]{20}\] +\d+%  \d+/100 records, ", f) for f in frames)


# -- status, reclaim, failed, jobs ----------------------------------------------------------


def test_status_shows_batches_by_status_and_the_workers_holding_leases_and_reclaim_frees_them(
    tmp_path: Path, sqlite_target: Target
) -> None:
    (tmp_path / "n.jsonl").write_text("".join(f'{{"n": {n}}}\n' for n in range(40)))
    job_id = ok(
        cli("prepare", "n.jsonl", "--batch-size", "10", *sqlite_target.args, cwd=tmp_path)
    ).stdout.strip()
    store, database = sqlite_target.store()
    try:
        assert store.claim_batch(job_id, "machine-b-1").claimed
    finally:
        database.close()

    status = as_json(cli("status", job_id, "--json", *sqlite_target.args, cwd=tmp_path))
    assert status["status"] == "PROCESSING"
    assert status["batches"] == {"PENDING": 3, "PROCESSING": 1}
    assert status["totalRecords"] == 40
    [lease] = status["leases"]
    assert (lease["workerId"], lease["batchIndex"], lease["stale"]) == ("machine-b-1", 0, False)

    text = ok(cli("status", job_id, "--lease-timeout", "1", *sqlite_target.args, cwd=tmp_path))
    assert re.search(r"^machine-b-1 +0 +[\d.]+ s +stale", text.stdout, re.M)
    assert re.search(r"^batches +3 PENDING, 1 PROCESSING$", text.stdout, re.M)

    reclaimed = as_json(
        cli("reclaim", job_id, "--timeout", "0", "--json", *sqlite_target.args, cwd=tmp_path)
    )
    assert reclaimed == {"jobId": job_id, "timeoutMs": 0, "reclaimed": 1}
    status = as_json(cli("status", job_id, "--json", *sqlite_target.args, cwd=tmp_path))
    assert (status["batches"], status["leases"]) == ({"PENDING": 4}, [])


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Target, People, str]:
    """One completed run on SQLite, shared by the read-only tests below."""
    directory = tmp_path_factory.mktemp("finished")
    target = Target(f"sqlite:///{directory / 'finished.db'}", new_prefix())
    people, report = run_people(directory, target, workers=1)
    return directory, target, people, report["jobId"]


def test_failed_exports_failed_and_invalid_records_with_their_errors_as_csv(
    finished: tuple[Path, Target, People, str],
) -> None:
    directory, target, people, job_id = finished
    exported = ok(cli("failed", job_id, *target.args, cwd=directory))
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(rows[0]) == ["recordIndex", "status", "error", "email", "age", *_BAD]
    assert len(rows) == people.invalid + people.failed
    by_index = {int(r["recordIndex"]): r for r in rows}
    assert by_index[13] == {
        "recordIndex": "13",
        "status": "failed",
        "error": "refused user13@fail.example",
        "email": "user13@fail.example",
        "age": "33",
        "_line": "",
        "_raw": "",
        "_error": "",
    }
    assert (
        by_index[7]["error"]
        == "age: Input should be a valid integer, unable to parse string as an integer"
    )
    assert by_index[102]["error"] == "line 105: 1 fields where the header has 2"
    assert by_index[102]["_raw"] == "short@x.io"


_BAD = ["_line", "_raw", "_error"]


def test_failed_writes_json_lines_to_a_file(
    finished: tuple[Path, Target, People, str], tmp_path: Path
) -> None:
    directory, target, people, job_id = finished
    output = tmp_path / "failed.jsonl"
    result = ok(
        cli(
            "failed",
            job_id,
            "--format",
            "jsonl",
            "--output",
            str(output),
            *target.args,
            cwd=directory,
        )
    )
    assert result.stdout == ""
    assert result.stderr == f"wrote {people.invalid + people.failed} failed records to {output}\n"
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [x["recordIndex"] for x in lines] == sorted(x["recordIndex"] for x in lines)
    [five] = [x for x in lines if x["recordIndex"] == 5]
    assert five["status"] == "invalid"
    assert five["raw"] == {"email": "not an email", "age": "25"}
    assert [(e["field"], e["code"]) for e in five["errors"]] == [("email", "PATTERN_MISMATCH")]
    assert five["processingError"] is None


def test_jobs_lists_recent_jobs_with_status_and_progress(
    finished: tuple[Path, Target, People, str],
) -> None:
    directory, target, people, job_id = finished
    [listed] = as_json(cli("jobs", "--json", *target.args, cwd=directory))
    assert listed["jobId"] == job_id
    assert (listed["status"], listed["percentage"], listed["source"]) == (
        "COMPLETED",
        100,
        "people.csv",
    )
    assert listed["totalRecords"] == people.records
    assert (listed["invalidRecords"], listed["failedRecords"]) == (people.invalid, people.failed)
    text = ok(cli("jobs", *target.args, cwd=directory)).stdout.splitlines()
    header = ["job", "status", "records", "done", "invalid", "failed", "started", "source"]
    assert text[0].split() == header
    assert text[1].startswith(f"{job_id}  COMPLETED")
    assert as_json(cli("jobs", "--status", "FAILED", "--json", *target.args, cwd=directory)) == []


def test_status_of_a_finished_job_reports_its_duration(
    finished: tuple[Path, Target, People, str],
) -> None:
    directory, target, _, job_id = finished
    status = as_json(cli("status", job_id, "--json", *target.args, cwd=directory))
    # Elapsed stops when the job completed: it does not grow while the job sits finished.
    assert status["elapsedMs"] == status["completedAt"] - status["startedAt"]
    text = ok(cli("status", job_id, *target.args, cwd=directory)).stdout
    assert re.search(r"^took +[\d.]+ s$", text, re.M)


# -- init, sql, migrate -------------------------------------------------------------------------


def test_init_then_migrate_records_the_first_step_without_changing_the_tables(
    tmp_path: Path, target: Target
) -> None:
    init = as_json(cli("init", "--json", *target.args, cwd=tmp_path))
    assert init["tables"] == [f"{target.prefix}{t}" for t in ("jobs", "records", "batches")]
    database = open_database(target.url)
    try:
        before = schema_snapshot(database, target.prefix)
        migrated = as_json(cli("migrate", "--json", *target.args, cwd=tmp_path))
        assert migrated["applied"] == ["0001_initial"]
        assert migrated["historyTable"] == f"{target.prefix}migrations"
        assert schema_snapshot(database, target.prefix) == before
    finally:
        database.close()
    again = as_json(cli("migrate", "--json", *target.args, cwd=tmp_path))
    assert again["applied"] == []
    assert [m["name"] for m in again["migrations"]] == ["0001_initial"]
    assert ok(cli("migrate", *target.args, cwd=tmp_path)).stdout.startswith("up to date")


def sql_dialect(database: pw.Database) -> str:
    """The ``sql --dialect`` that matches this server."""
    if isinstance(database, pw.MySQLDatabase):
        return "mariadb" if (database.server_version or (0,)) >= (10,) else "mysql"
    return "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"


def test_sql_prints_exactly_the_ddl_create_tables_runs(tmp_path: Path, target: Target) -> None:
    database = open_database(target.url)
    try:
        database.connect(reuse_if_open=True)
        dialect = sql_dialect(database)
        text = ok(cli("sql", "--dialect", dialect, *target.args, cwd=tmp_path)).stdout
        statements = [s for s in text.split(";\n") if s.strip()]
        assert statements[0].startswith("-- batchactions-peewee")
        statements = [re.sub(r"^(--[^\n]*\n)+", "", s) for s in statements]
        listed = as_json(cli("sql", "--dialect", dialect, "--json", *target.args, cwd=tmp_path))
        assert listed["statements"] == statements
        assert len(statements) == 8  # three tables, five indexes
        for statement in statements:
            database.execute_sql(statement)  # type: ignore[no-untyped-call]
        reference = new_prefix()
        PeeweeStateStore(database, table_prefix=reference).create_tables()
        assert schema_snapshot(database, target.prefix) == schema_snapshot(database, reference)
    finally:
        database.close()


def test_sql_for_mysql_and_mariadb_names_a_no_pad_binary_collation(tmp_path: Path) -> None:
    mysql = ok(cli("sql", "--dialect", "mysql", cwd=tmp_path)).stdout
    mariadb = ok(cli("sql", "--dialect", "mariadb", cwd=tmp_path)).stdout
    assert mysql.count("DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_0900_bin;") == 3
    assert mariadb.count("DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;") == 3
    assert "NO PAD" in mysql and "NO PAD" in mariadb


# -- the database option --------------------------------------------------------------------


def test_database_comes_from_the_environment_else_a_wal_sqlite_file_in_the_cwd(
    tmp_path: Path,
) -> None:
    env_db = tmp_path / "from-env.db"
    ok(cli("init", cwd=tmp_path, env={URL_ENV: f"sqlite:///{env_db}"}))
    assert env_db.exists() and not (tmp_path / "batchactions.db").exists()
    ok(cli("init", cwd=tmp_path))
    default = tmp_path / "batchactions.db"
    with sqlite3.connect(default) as connection:
        [(mode,)] = connection.execute("PRAGMA journal_mode").fetchall()
    assert mode == "wal"
    from_env = {URL_ENV: f"sqlite:///{env_db}"}
    assert as_json(cli("jobs", "--json", cwd=tmp_path, env=from_env)) == []
    overridden = cli("jobs", "--database", "sqlite:///nowhere.db", cwd=tmp_path, env=from_env)
    assert overridden.returncode == 1
    assert "no database at nowhere.db" in overridden.stderr


def test_options_may_come_before_or_after_the_command(
    tmp_path: Path, sqlite_target: Target
) -> None:
    ok(cli("init", *sqlite_target.args, cwd=tmp_path))
    before = as_json(cli(*sqlite_target.args, "jobs", "--json", cwd=tmp_path))
    after = as_json(cli("jobs", "--json", *sqlite_target.args, cwd=tmp_path))
    assert before == after == []


def test_a_password_in_the_url_is_never_printed(
    tmp_path: Path, url_for: Callable[[str], str]
) -> None:
    url = url_for("postgres")
    parts = urllib.parse.urlsplit(url)
    if parts.password:  # the server wants one: it is the secret to hide
        secret, with_password = parts.password, url
    else:  # a server that trusts local users ignores the password given
        secret = "hunter2-secret"
        netloc = f"{parts.username}:{secret}@{parts.netloc.rpartition('@')[2]}"
        with_password = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    result = ok(
        cli(
            "init",
            "--json",
            "--table-prefix",
            new_prefix(),
            "--database",
            with_password,
            cwd=tmp_path,
        )
    )
    assert json.loads(result.stdout)["database"].startswith("postgresql://postgres:***@")
    assert secret not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///batchactions.db", "sqlite:///batchactions.db"),
        ("mysql://root@db:3306/app", "mysql://root@db:3306/app"),
        ("mysql://root:s3cret@db:3306/app", "mysql://root:***@db:3306/app"),
        ("postgresql://u:p%40ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u@h/db?password=s3cret&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("postgresql://:s3cret@h/db", "postgresql://:***@h/db"),
    ],
)
def test_redact_hides_the_password_and_keeps_the_rest(url: str, expected: str) -> None:
    assert redact(url) == expected


# -- errors -------------------------------------------------------------------------------------


@pytest.fixture
def ready(tmp_path: Path) -> Iterator[Path]:
    """A directory with people.csv, cli_case.py and an initialized batchactions.db."""
    write_people(tmp_path)
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "people.txt").write_text("email,age\n")
    sqlite3.connect(tmp_path / "no-tables.db").close()
    PeeweeStateStore(pw.SqliteDatabase(str(tmp_path / "batchactions.db"))).create_tables()
    yield tmp_path


ERRORS = [
    # (arguments, exit code, the one line on stderr after "batchactions-peewee: error: ")
    (
        ["run", "missing.csv"],
        1,
        "cannot read missing.csv: No such file or directory",
    ),
    (
        ["status", "nope"],
        1,
        "no job nope in sqlite:///batchactions.db",
    ),
    (
        ["work", "nope"],
        1,
        "no job nope in sqlite:///batchactions.db",
    ),
    (
        ["failed", "nope"],
        1,
        "no job nope in sqlite:///batchactions.db",
    ),
    (
        ["reclaim", "nope"],
        1,
        "no job nope in sqlite:///batchactions.db",
    ),
    (
        ["prepare", "empty.csv"],
        1,
        "empty.csv is empty: a CSV file starts with a header line",
    ),
    (
        ["prepare", "people.txt"],
        2,
        "cannot tell the format of people.txt from its extension",
    ),
    (
        ["run", "people.csv", "--processor", "nowhere:fn"],
        2,
        "--processor nowhere:fn: cannot import nowhere",
    ),
    (
        ["run", "people.csv", "--processor", "cli_case"],
        2,
        "--processor 'cli_case': expected module:name",
    ),
    (
        ["run", "people.csv", "--processor", "cli_case:nothing"],
        2,
        "--processor cli_case:nothing: cli_case has no nothing",
    ),
    (
        ["run", "people.csv", "--processor", "cli_case:not_callable"],
        2,
        "--processor cli_case:not_callable: not a function",
    ),
    (
        ["run", "people.csv", "--schema", "cli_case:process"],
        2,
        "--schema cli_case:process: not a pydantic model class",
    ),
    (
        ["jobs", "--database", "nosuch://h/db"],
        2,
        "--database nosuch://h/db: unknown scheme 'nosuch'",
    ),
    (
        ["jobs", "--database", "sqlite:///missing/x.db"],
        1,
        "no database at missing/x.db: run "
        "`batchactions-peewee init --database sqlite:///missing/x.db` first",
    ),
    (
        ["jobs", "--database", "sqlite:///no-tables.db"],
        1,
        "sqlite:///no-tables.db has no table batchactions_jobs",
    ),
    (
        ["jobs", "--database", "mysql://root:pa55word@127.0.0.1:1/x"],
        1,
        "cannot connect to mysql://root:***@127.0.0.1:1/x: ",
    ),
    (
        ["jobs", "--database", "postgresql://u:pa55word@127.0.0.1:1/x"],
        1,
        "cannot connect to postgresql://u:***@127.0.0.1:1/x: ",
    ),
]


@pytest.mark.parametrize(("args", "code", "message"), ERRORS, ids=[" ".join(e[0]) for e in ERRORS])
def test_each_error_is_one_line_on_stderr_with_its_exit_code(
    ready: Path, args: list[str], code: int, message: str
) -> None:
    result = cli(*args, cwd=ready)
    assert result.returncode == code
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"batchactions-peewee: error: {message}"), line
    assert "pa55word" not in result.stderr
    if args[0] in ("run", "prepare"):  # nothing was prepared
        database = pw.SqliteDatabase(str(ready / "batchactions.db"))
        assert PeeweeStateStore(database).list_jobs() == []
        database.close()


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["run", "people.csv", "--workers", "0"],
        ["status", "x" * 37],
        ["jobs", "--table-prefix", "bad-prefix"],
        ["sql", "--dialect", "oracle"],
        ["frobnicate"],
    ],
    ids=lambda a: " ".join(a)[:30],
)
def test_usage_errors_exit_with_2_and_no_traceback(ready: Path, args: list[str]) -> None:
    result = cli(*args, cwd=ready)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error, usage = result.stderr.splitlines()  # the error, then a short usage
    assert "error:" in error and usage.startswith("usage: batchactions-peewee")


#: Every command of the CLI.
COMMANDS = (
    "init",
    "sql",
    "migrate",
    "run",
    "prepare",
    "work",
    "status",
    "failed",
    "reclaim",
    "jobs",
    "pause",
    "resume",
    "abort",
    "delete",
    "purge",
    "retry",
    "preview",
    "dashboard",
    "metrics",
)


def test_every_command_that_prints_data_has_json() -> None:
    parser: Any = build_parser()
    commands: dict[str, Any] = parser._subparsers._group_actions[0].choices
    assert set(commands) == set(COMMANDS)
    for name, sub in commands.items():
        assert "--json" in sub._option_string_actions, name


def test_version_and_help_name_every_command(tmp_path: Path) -> None:
    assert ok(cli("--version", cwd=tmp_path)).stdout.startswith("batchactions-peewee ")
    text = ok(cli("--help", cwd=tmp_path)).stdout
    for name in COMMANDS:
        assert name in text
