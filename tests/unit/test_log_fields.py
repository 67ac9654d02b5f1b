"""Log lines: every logger is under ``batchactions_peewee``, and the lines about a job carry
``job_id``, ``batch_id`` and ``worker_id`` as fields, as the README's JSON set-up shows."""

from __future__ import annotations

import ast
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from batchactions_peewee import InMemoryStateStore, ProcessingContext, Worker, prepare_job
from batchactions_peewee.logfields import LOG_FIELDS

from ..support import REPO

PACKAGE = REPO / "batchactions_peewee"


def test_every_logger_of_the_package_is_named_by_its_module() -> None:
    """``getLogger(__name__)`` everywhere: each name is under ``batchactions_peewee``."""
    calls = 0
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "getLogger"
            ):
                calls += 1
                (arg,) = node.args
                named = isinstance(arg, ast.Name) and arg.id == "__name__"
                literal = isinstance(arg, ast.Constant) and arg.value == "batchactions_peewee"
                assert named or literal, f"{path}:{node.lineno}"
    assert calls >= 10


def _run_a_job(worker_id: str = "w-logs") -> tuple[str, set[str]]:
    """A 4-record job in 2 batches whose every record fails once, then succeeds: its id
    and its batches' ids."""
    store = InMemoryStateStore()
    job_id = prepare_job(store, ({"n": n} for n in range(4)), batch_size=2).job_id
    failed_once: set[int] = set()

    def flaky(record: dict[str, Any], context: ProcessingContext) -> None:
        if context.record_index not in failed_once:
            failed_once.add(context.record_index)
            raise ValueError("once")

    Worker(store, flaky, worker_id=worker_id, max_retries=1, retry_delay_ms=0).run(job_id)
    state = store.get_job_state(job_id)
    assert state is not None
    return job_id, {batch.id for batch in state.batches}


def test_lines_about_a_job_carry_its_fields(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="batchactions_peewee"):
        job_id, batch_ids = _run_a_job()
    ours = [r for r in caplog.records if r.name.startswith("batchactions_peewee.")]
    retries = [r for r in ours if "retry" in r.getMessage()]
    finalized = [r for r in ours if "finalized" in r.getMessage()]
    assert len(retries) == 4 and len(finalized) == 1
    for line in ours:
        assert all(hasattr(line, name) for name in LOG_FIELDS), line.getMessage()
        assert line.job_id == job_id  # type: ignore[attr-defined]
    assert {r.batch_id for r in retries} == batch_ids  # type: ignore[attr-defined]
    assert finalized[0].worker_id == "w-logs"  # type: ignore[attr-defined]
    assert finalized[0].batch_id is None  # type: ignore[attr-defined]


def _readme_logging_block() -> str:
    text = (REPO / "README.md").read_text("utf-8")
    start = text.index("\n### Logging\n")
    end = text.index("\n## ", start)
    blocks: list[str] = re.findall(
        r"^```py\n(.*?)^```$", text[start:end], flags=re.MULTILINE | re.DOTALL
    )
    (block,) = blocks
    return block


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """The README's block configures the package's logger: put it back afterwards."""
    logger = logging.getLogger("batchactions_peewee")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in saved[0]:
                handler.close()
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("restored_logging")
def test_the_readmes_json_logging_gives_one_object_per_line_with_the_fields() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_readme_logging_block(), "README.md (### Logging)", "exec"), namespace)
    stream = io.StringIO()
    (handler,) = logging.getLogger("batchactions_peewee").handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    job_id, _ = _run_a_job("w-json")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    finalized = [line for line in lines if "finalized" in line["message"]]
    assert finalized, stream.getvalue()
    assert finalized[0]["job_id"] == job_id
    assert finalized[0]["worker_id"] == "w-json"
    assert finalized[0]["logger"] == "batchactions_peewee.engine.worker"
    assert set(LOG_FIELDS) <= set(finalized[0])
