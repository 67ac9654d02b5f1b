"""The README as a newcomer uses it: its Python blocks run as written, and its commands exist.

The ```python blocks run in order, in one namespace, in a temporary directory (so
``SqliteDatabase("app.db")`` lands there). Each block's output must be what the block says
it prints: the comment after a ``print(...)`` on the same line, or, for a print inside a
loop, the comment lines right after the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path
from typing import Any

import pytest

from batchactions_peewee import JobStatus, PeeweeStateStore
from batchactions_peewee.cli import build_parser

from ..support import REPO

README = REPO / "README.md"

_PRINT_WITH_OUTPUT = re.compile(r"^\s*print\(.*\)  # (.*)$")


def readme() -> str:
    return README.read_text("utf-8")


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", readme(), flags=re.MULTILINE | re.DOTALL)


def said_output(block: str) -> list[str]:
    """What ``block`` says it prints (see the module docstring)."""
    said: list[str] = []
    after_loop = False
    for line in block.splitlines():
        if match := _PRINT_WITH_OUTPUT.match(line):
            said.append(match[1])
        elif after_loop and line.startswith("# "):
            said.append(line[2:])
            continue
        after_loop = line.startswith((" ", "\t"))
    return said


def section(title: str) -> str:
    """The text of the README's ``## title`` section, up to the next one."""
    text = readme()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_readme_python_blocks_run_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) >= 2
    namespace: dict[str, Any] = {"__name__": "readme"}
    try:
        for number, block in enumerate(blocks, 1):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(block, f"README.md python block {number}", "exec"), namespace)
            assert out.getvalue().splitlines() == said_output(block), f"block {number}"

        # The job the first block prepared: one worker took it to the end.
        store: PeeweeStateStore = namespace["store"]
        assert (tmp_path / "app.db").is_file()
        job_id = namespace["job"].job_id
        job = store.get_job_state(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED
        assert job.total_records == 4
        assert namespace["summary"].finalized
        assert store.record_counts(job_id) == {"processed": 2, "invalid": 1, "failed": 1}
        assert sorted(namespace["registered"]) == ["ada@example.com", "grace@example.com"]
        # The job the coordination block drove by hand, batch by batch.
        driven = store.get_job_state(namespace["job_id"])
        assert driven is not None and driven.status is JobStatus.COMPLETED
        assert len(driven.batches) == 2
        assert store.record_counts(driven.id) == {"processed": 4}
    finally:
        if "db" in namespace:
            namespace["db"].close()


def test_said_output_reads_trailing_comments_and_comments_after_a_loop() -> None:
    block = "x = 1  # not output\nprint(x)  # 1\nfor i in (2, 3):\n    print(i)\n# 2\n# 3\n"
    assert said_output(block) == ["1", "2", "3"]


def test_the_commands_table_is_the_cli() -> None:
    table = re.findall(r"^\| `([a-z]+)[^`]*` \|", section("Command line"), flags=re.MULTILINE)
    assert set(table) == set(subcommands(build_parser()))
    assert len(table) == len(set(table))


def test_every_command_the_readme_names_exists() -> None:
    named = set(re.findall(r"\bbatchactions-peewee ([a-z]+)\b", readme()))
    assert named, "the README names no command"
    assert named <= set(subcommands(build_parser()))


def test_every_option_of_the_command_line_section_exists() -> None:
    parser = build_parser()
    options = set(parser._option_string_actions)
    for sub in subcommands(parser).values():
        options |= set(sub._option_string_actions)
    named = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", section("Command line")))
    assert named, "the Command line section names no option"
    assert named <= options
