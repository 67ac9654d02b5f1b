"""Bad input a new user gives the command line: each gets one clear line (two for a usage
error: the error and a short usage), the right exit code, and nothing written."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..support.cli import Target, as_json, cli, ok

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
