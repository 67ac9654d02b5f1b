"""Bad input a new user gives the command line: each gets one clear line (two for a usage
error: the error and a short usage), the right exit code, and nothing written."""

from __future__ import annotations

import gzip
import json
import random
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from ..support.backends import IN_CI, mysql_global_packet_limit, mysql_packet_limit, open_database
from ..support.cli import TIMEOUT_S, Target, as_json, cli, ok

PROG = "batchactions-peewee"

SCHEMAS = """
import pydantic


class Empty(pydantic.BaseModel):
    pass


class Person(pydantic.BaseModel):
    id: int
    email: str
    name: str
"""


@pytest.fixture
def workdir(tmp_path: Path, sqlite_target: Target) -> Path:
    """A directory with a schema module, on a target whose tables exist."""
    (tmp_path / "bad_input_case.py").write_text(SCHEMAS)
    ok(cli("init", *sqlite_target.args, cwd=tmp_path))
    return tmp_path


def one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line on stderr of a command that failed with ``code``."""
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    return line


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The first of the two lines of a usage error (exit 2); the second is a short usage."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    error, usage = result.stderr.splitlines()
    assert usage.startswith(f"usage: {PROG}") and usage.endswith("--help)"), usage
    return error


def no_job(target: Target, cwd: Path) -> None:
    assert as_json(cli("jobs", "--json", *target.args, cwd=cwd)) == []


# -- --delimiter ----------------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", ["\\t", "\t", "tab", "TAB"])
def test_a_tab_delimiter_is_given_as_backslash_t_a_tab_or_its_name(
    workdir: Path, sqlite_target: Target, delimiter: str
) -> None:
    (workdir / "people.tsv").write_text("id\temail\tname\n1\ta@x.io\tAnn, Jr\n2\tb@x.io\tBo\n")
    prepared = as_json(
        cli(
            "prepare",
            "people.tsv",
            "--format",
            "csv",
            "--delimiter",
            delimiter,
            "--schema",
            "bad_input_case:Person",
            "--json",
            *sqlite_target.args,
            cwd=workdir,
        )
    )
    assert (prepared["totalRecords"], prepared["unreadableRows"]) == (2, 0)
    assert prepared["columns"] == ["id", "email", "name"]


@pytest.mark.parametrize(("name", "character"), [("semicolon", ";"), ("pipe", "|")])
def test_a_delimiter_may_be_named(
    workdir: Path, sqlite_target: Target, name: str, character: str
) -> None:
    (workdir / "p.csv").write_text(f"id{character}name\n1{character}Ann, Jr\n")
    preview = as_json(
        cli(
            "preview",
            "p.csv",
            "--delimiter",
            name,
            "--schema",
            "bad_input_case:Person",
            "--json",
            cwd=workdir,
        )
    )
    assert preview["columns"] == ["id", "name"]
    assert [e["field"] for e in preview["errors"]] == ["email"]  # read in two columns


@pytest.mark.parametrize("command", ["run", "prepare", "preview"])
@pytest.mark.parametrize("delimiter", [";;", "\\t\\t", ""])
def test_a_delimiter_of_several_characters_is_a_usage_error(
    workdir: Path, sqlite_target: Target, command: str, delimiter: str
) -> None:
    (workdir / "p.csv").write_text("id;name\n1;Ann\n")
    result = cli(command, "p.csv", "--delimiter", delimiter, *sqlite_target.args, cwd=workdir)
    assert usage_error(result) == (
        f"{PROG} {command}: error: argument --delimiter: expected one character, \\t or a "
        f"name (tab, comma, semicolon, pipe, space), got {delimiter!r}"
    )
    no_job(sqlite_target, workdir)


# -- --schema -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "prepare", "preview"])
@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ("pydantic:BaseModel", "not a pydantic model class"),
        (
            "bad_input_case:Empty",
            "Empty has no fields: every record would validate as {} "
            "(give it fields, or extra='allow')",
        ),
    ],
)
def test_a_schema_without_fields_is_a_usage_error(
    workdir: Path, sqlite_target: Target, command: str, schema: str, message: str
) -> None:
    (workdir / "p.csv").write_text("id,email,name\n1,a@x.io,Ann\n")
    result = cli(command, "p.csv", "--schema", schema, *sqlite_target.args, cwd=workdir)
    assert one_error(result, 2) == f"{PROG}: error: --schema {schema}: {message}"
    no_job(sqlite_target, workdir)


# -- the header's columns -------------------------------------------------------------------


def test_prepare_and_run_say_which_columns_the_header_gave(
    workdir: Path, sqlite_target: Target
) -> None:
    (workdir / "p.csv").write_text("id,email,name\n1,a@x.io,Ann\n2,b@x.io,Bo\n")
    prepared = ok(cli("prepare", "p.csv", *sqlite_target.args, cwd=workdir))
    said = prepared.stderr.splitlines()
    assert said[0].startswith("prepared 2 records (0 unreadable) in 1 batches; work them with")
    assert said[1:] == ["columns: id, email, name"]
    run = ok(cli("run", "p.csv", "--workers", "1", *sqlite_target.args, cwd=workdir))
    assert run.stderr.splitlines()[1] == "columns: id, email, name"
    listed = as_json(cli("prepare", "p.csv", "--json", *sqlite_target.args, cwd=workdir))
    assert listed["columns"] == ["id", "email", "name"]

    (workdir / "p.jsonl").write_text('{"id": 1}\n')
    prepared = ok(cli("prepare", "p.jsonl", *sqlite_target.args, cwd=workdir))
    assert "columns" not in prepared.stderr
    listed = as_json(cli("prepare", "p.jsonl", "--json", *sqlite_target.args, cwd=workdir))
    assert listed["columns"] is None


def test_a_long_header_is_shown_cut_with_how_many_more_columns(
    workdir: Path, sqlite_target: Target
) -> None:
    names = [f"c{n}" for n in range(30)]
    (workdir / "wide.csv").write_text(",".join(names) + "\n" + ",".join("1" * 30) + "\n")
    prepared = ok(cli("prepare", "wide.csv", *sqlite_target.args, cwd=workdir))
    columns = ", ".join(names[:12])
    assert prepared.stderr.splitlines()[1] == f"columns: {columns} ... and 18 more"
    listed = as_json(cli("prepare", "wide.csv", "--json", *sqlite_target.args, cwd=workdir))
    assert listed["columns"] == names


def test_a_first_row_of_data_is_taken_as_the_header_with_a_warning(
    workdir: Path, sqlite_target: Target
) -> None:
    (workdir / "noheader.csv").write_text("1,ada@x.io,Ada\n2,bob@x.io,Bob\n3,cy@x.io,Cy\n")
    prepared = ok(cli("prepare", "noheader.csv", *sqlite_target.args, cwd=workdir))
    said = prepared.stderr.splitlines()
    assert said[0] == (
        f"{PROG}: warning: noheader.csv: line 1 may be data, not a header (1, ada@x.io read "
        "as column names); a CSV file starts with a header line"
    )
    assert said[1].startswith("prepared 2 records (0 unreadable) in 1 batches; work them with")
    assert said[2:] == ["columns: 1, ada@x.io, Ada"]


# -- files that are not text ----------------------------------------------------------------

NOT_TEXT = {
    "gzip": (gzip.compress(b"id,email\n1,a@x.io\n" * 5000), "is not text (gzip-compressed?)"),
    "noise": (random.Random(3).randbytes(100_000), "is not text: it holds a NUL byte (byte "),
}


@pytest.mark.parametrize("name", ["data.csv", "data.jsonl"])
@pytest.mark.parametrize("kind", list(NOT_TEXT))
def test_a_file_that_is_not_text_is_one_error_and_no_job(
    workdir: Path, sqlite_target: Target, name: str, kind: str
) -> None:
    data, message = NOT_TEXT[kind]
    (workdir / name).write_bytes(data)
    for command in ("run", "prepare", "preview"):
        schema = ["--schema", "bad_input_case:Person"]
        result = cli(command, name, *schema, *sqlite_target.args, cwd=workdir)
        assert one_error(result, 1).startswith(f"{PROG}: error: {name} {message}"), command
    no_job(sqlite_target, workdir)


def test_standard_input_that_is_not_text_is_one_error_and_no_job(
    workdir: Path, sqlite_target: Target
) -> None:
    command = [sys.executable, "-m", "batchactions_peewee", "prepare", "-", "--format", "jsonl"]
    result = subprocess.run(
        [*command, *sqlite_target.args],
        cwd=workdir,
        input=gzip.compress(b'{"id": 1}\n' * 5000),
        capture_output=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"{PROG}: error: standard input is not text (gzip-compressed?)\n"
    )
    no_job(sqlite_target, workdir)


# -- --encoding -----------------------------------------------------------------------------

LATIN_1 = "id,email,name\n1,jose@x.io,José\n2,ines@x.io,Inês\n3,ana@x.io,Ana\n4,joao@x.io,João\n"


def test_a_latin1_file_needs_encoding_and_is_read_with_it(
    workdir: Path, sqlite_target: Target
) -> None:
    (workdir / "latin.csv").write_bytes(LATIN_1.encode("latin-1"))
    result = cli("prepare", "latin.csv", *sqlite_target.args, cwd=workdir)
    assert one_error(result, 1) == (
        f"{PROG}: error: latin.csv is not UTF-8 text (byte 0xe9 at byte 30): give its "
        "encoding, e.g. --encoding latin-1"
    )
    no_job(sqlite_target, workdir)

    run = as_json(
        cli(
            "run",
            "latin.csv",
            "--encoding",
            "latin-1",
            "--schema",
            "bad_input_case:Person",
            "--workers",
            "1",
            "--json",
            *sqlite_target.args,
            cwd=workdir,
        )
    )
    assert (run["processedRecords"], run["invalidRecords"]) == (4, 0)
    store, database = sqlite_target.store()
    try:
        names = [r.raw["name"] for r in store.get_batch_records(run["jobId"], _batch(store, run))]
    finally:
        database.close()
    assert names == ["José", "Inês", "Ana", "João"]


def _batch(store: Any, report: dict[str, Any]) -> str:
    job = store.get_job_state(report["jobId"])
    [batch] = job.batches
    return str(batch.id)


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "unknown encoding 'klingon'"),
        ("utf-16", "encoding utf-16 is not supported: it must keep ASCII as it is"),
    ],
)
def test_an_encoding_that_cannot_be_used_is_a_usage_error(
    workdir: Path, sqlite_target: Target, encoding: str, message: str
) -> None:
    (workdir / "p.csv").write_text("id\n1\n")
    for command in ("run", "prepare", "preview"):
        result = cli(command, "p.csv", "--encoding", encoding, *sqlite_target.args, cwd=workdir)
        error = usage_error(result)
        assert error.startswith(f"{PROG} {command}: error: argument --encoding: {message}")
    no_job(sqlite_target, workdir)


# -- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["work"], "work: error: the following arguments are required: JOB_ID"),
        (["status"], "status: error: the following arguments are required: JOB_ID"),
        (["prepare"], "prepare: error: the following arguments are required: FILE"),
        (["jobs", "--limit", "many"], "jobs: error: argument --limit: not a whole number"),
        (["run", "p.csv", "--workers", "0"], "run: error: argument --workers: must be at least"),
        ([], ": error: the following arguments are required: COMMAND"),
        (["frobnicate"], ": error: argument COMMAND: invalid choice: 'frobnicate'"),
    ],
    ids=lambda a: " ".join(a) if isinstance(a, list) else "",
)
def test_a_usage_error_is_the_error_and_a_short_usage(
    tmp_path: Path, args: list[str], error: str
) -> None:
    result = cli(*args, cwd=tmp_path)
    assert usage_error(result).startswith(f"{PROG}{'' if error[0] == ':' else ' '}{error}")
    command = next((a for a in args if not a.startswith("-")), None)
    usage = result.stderr.splitlines()[1]
    if command in ("work", "status"):
        assert usage == f"usage: {PROG} {command} JOB_ID [options] (see {PROG} {command} --help)"
    elif command in (None, "frobnicate"):
        assert usage == f"usage: {PROG} COMMAND [options] (see {PROG} --help)"


def test_help_still_prints_every_option(tmp_path: Path) -> None:
    text = ok(cli("work", "--help", cwd=tmp_path)).stdout
    for option in ("--max-batches", "--max-duration", "--processor", "--lease-timeout"):
        assert option in text
    text = ok(cli("prepare", "--help", cwd=tmp_path)).stdout
    assert "--encoding" in text and "--delimiter" in text


# -- long fields ----------------------------------------------------------------------------

MIB = 2**20


def _server_needs(target: Target, statement_bytes: int) -> None:
    """Skip outside CI when a MySQL server's packet limit is below ``statement_bytes``."""
    if not target.url.startswith("mysql"):
        return
    database = open_database(target.url)
    try:
        limit = mysql_packet_limit(database)
    finally:
        database.close()
    if limit < statement_bytes and not IN_CI:
        pytest.skip(f"max_allowed_packet is {limit} bytes; .ci/run raises it to 64 MiB")


def test_an_unreadable_line_of_20_mib_is_stored_cut_with_a_marker(
    tmp_path: Path, target: Target
) -> None:
    line = '{"id": 1, "blob": "' + "x" * (20 * MIB)  # never closed
    (tmp_path / "broken.jsonl").write_text(line + '\n{"id": 2}\n')
    report = as_json(
        cli("run", "broken.jsonl", "--workers", "1", "--json", *target.args, cwd=tmp_path)
    )
    assert (report["status"], report["processedRecords"], report["invalidRecords"]) == (
        "COMPLETED",
        1,
        1,
    )
    store, database = target.store()
    try:
        [bad] = store.get_failed_records(report["jobId"])
    finally:
        database.close()
    assert bad.raw["_raw"] == line[:10_000] + f"... [cut: {len(line)} characters in all]"
    assert bad.raw["_error"].startswith("line 1: not JSON: Unterminated string")
    [error] = bad.errors
    assert (error.message, error.value) == (bad.raw["_error"], None)


def test_a_20_mib_field_round_trips_unchanged(tmp_path: Path, target: Target) -> None:
    _server_needs(target, 48 * MIB)  # the raw and the parsed form, sent in one statement
    value = "quotes \" ' backslash \\ newline \n é 😀 " + "x" * (20 * MIB)
    (tmp_path / "big.jsonl").write_text(json.dumps({"id": 1, "blob": value}) + '\n{"id": 2}\n')
    report = as_json(
        cli("run", "big.jsonl", "--workers", "1", "--json", *target.args, cwd=tmp_path)
    )
    assert (report["status"], report["processedRecords"]) == ("COMPLETED", 2)
    store, database = target.store()
    try:
        job = store.get_job_state(report["jobId"])
        assert job is not None
        [first, _] = store.get_batch_records(job.id, job.batches[0].id)
    finally:
        database.close()
    assert first.raw == first.parsed == {"id": 1, "blob": value}


def test_a_statement_over_max_allowed_packet_is_refused_at_once_naming_it(
    tmp_path: Path, url_for: Any
) -> None:
    """MariaDB's default limit (16 MiB) and a 20 MiB field: one line naming the limit and the
    statement's size, no retries for seconds on end, and no job."""
    target = Target(url_for("mysql"), f"packet{time.monotonic_ns()}_")
    ok(cli("init", *target.args, cwd=tmp_path))
    (tmp_path / "big.jsonl").write_text(json.dumps({"id": 1, "blob": "x" * (20 * MIB)}) + "\n")
    command = [sys.executable, "-m", "batchactions_peewee", "prepare", "big.jsonl"]
    admin = open_database(target.url)
    database_name = urllib.parse.urlsplit(target.url).path.lstrip("/")
    started = time.monotonic()
    try:
        with mysql_global_packet_limit(admin, 16 * MIB):
            before = _connections(admin, database_name)
            prepare = subprocess.Popen(
                [*command, *target.args],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            # Back to the server's own limit as soon as the command has its connection.
            while _connections(admin, database_name) <= before and prepare.poll() is None:
                assert time.monotonic() - started < TIMEOUT_S
                time.sleep(0.01)
        out, err = prepare.communicate(timeout=TIMEOUT_S)
    finally:
        admin.close()
    elapsed = time.monotonic() - started
    assert prepare.returncode == 1, err
    assert out == ""
    assert err.splitlines() == [
        f"{PROG}: error: the database refuses a 40.0 MiB statement (1 record): raise the "
        "server's max_allowed_packet (now 16.0 MiB) above that"
    ]
    assert elapsed < 20, "refused at once, not retried as a lost connection"
    no_job(target, tmp_path)


def _connections(database: Any, name: str) -> int:
    cursor = database.execute_sql(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (name,)
    )
    return int(cursor.fetchone()[0])
