"""The command line as a user runs it: in a subprocess, against a database and prefix."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peewee as pw

from batchactions_peewee import PeeweeStateStore
from batchactions_peewee.cli import URL_ENV

from .backends import open_database

TIMEOUT_S = 120


def cli(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the command line as a user would; BATCHACTIONS_DATABASE_URL only if given."""
    environment = {k: v for k, v in os.environ.items() if k != URL_ENV}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "batchactions_peewee", *args],
        cwd=cwd,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def pasted(text: str, after: str) -> list[str]:
    """The arguments of the command printed in backticks right after ``after`` in
    ``text``, split as a POSIX shell would when the user pastes it."""
    found = re.search(re.escape(after) + r" `([^`]+)`", text)
    assert found, f"no `command` after {after!r} in {text!r}"
    words = shlex.split(found.group(1))
    assert words[0] == "batchactions-peewee", words
    return words[1:]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result).stdout)


@dataclass(frozen=True)
class Target:
    """A database URL and a table prefix no other test uses."""

    url: str
    prefix: str

    @property
    def args(self) -> list[str]:
        return ["--database", self.url, "--table-prefix", self.prefix]

    def store(self) -> tuple[PeeweeStateStore, pw.Database]:
        database = open_database(self.url)
        return PeeweeStateStore(database, table_prefix=self.prefix), database
