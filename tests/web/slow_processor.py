"""The processor of the browser walk-through: long enough a job to watch it move."""

from __future__ import annotations

import time
from typing import Any

from batchactions_peewee import ProcessingContext

#: Every this many records, one is refused, so the job has failed records to show.
FAIL_EVERY = 25


def process(record: dict[str, Any], context: ProcessingContext) -> None:
    """Waits 20 ms a record, as a call to another system would; refuses every
    ``FAIL_EVERY``-th record with a message naming it."""
    time.sleep(0.02)
    if record["n"] % FAIL_EVERY == 0:
        raise ValueError(f"refused record {record['n']}")
