"""The record processor of the Celery kill test, run in the Celery worker's children.

Each call appends its record index to a file of its own process under
``$BATCHACTIONS_TEST_CALL_LOG`` (unbuffered, so a SIGKILL loses nothing written), sleeps
``$BATCHACTIONS_TEST_RECORD_MS`` and fails every record whose ``n`` ends in 999. The first
process given record ``$BATCHACTIONS_TEST_BLOCK_AT`` writes its pid to
``$BATCHACTIONS_TEST_MARKER`` and sleeps there, holding its batch, until it is killed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from batchactions_peewee import ProcessingContext

LOG_ENV = "BATCHACTIONS_TEST_CALL_LOG"
RECORD_MS_ENV = "BATCHACTIONS_TEST_RECORD_MS"
BLOCK_AT_ENV = "BATCHACTIONS_TEST_BLOCK_AT"
MARKER_ENV = "BATCHACTIONS_TEST_MARKER"
BLOCK_S = 120.0

_logs: dict[int, int] = {}  # pid -> fd: a forked child opens its own


def process(record: dict[str, Any], context: ProcessingContext) -> None:
    index = context.record_index
    os.write(_log(), f"{index}\n".encode())
    if index == int(os.environ.get(BLOCK_AT_ENV, "-1")) and _first_to_block():
        time.sleep(BLOCK_S)
    time.sleep(int(os.environ.get(RECORD_MS_ENV, "0")) / 1000)
    if record["n"] % 1000 == 999:
        raise ValueError(f"record {index} fails, as every thousandth does")


def _log() -> int:
    pid = os.getpid()
    if pid not in _logs:
        path = Path(os.environ[LOG_ENV]) / f"calls-{pid}.log"
        _logs[pid] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return _logs[pid]


def _first_to_block() -> bool:
    try:
        fd = os.open(os.environ[MARKER_ENV], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True
