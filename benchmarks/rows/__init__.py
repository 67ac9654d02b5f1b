"""The benchmark's rows: each function runs one row on one backend and returns its lines.

``bulk`` (save_batch_records, prepare_job, complete_batch, save_processed_record), ``cycles``
(claim + complete with threads and processes), ``progress`` (progress reads as the job
grows), ``e2e`` (prepare_job then Worker.run in several processes), ``concurrency``
(one worker process whose processor waits, at Worker(concurrency=N)) and ``imports`` (a
CSV imported by a transactional batch processor) and ``volume`` (a whole job against the
physical limit of the shared tables).
"""

from __future__ import annotations

from collections.abc import Callable

from common import Bench, Row

from .bulk import row_complete, row_prepare, row_save, row_single
from .concurrency import row_concurrency
from .cycles import row_cycles
from .e2e import row_e2e
from .imports import row_import
from .progress import row_progress
from .volume import row_volume

#: The rows in the table's order, by the names --rows takes.
ROW_FUNCTIONS: dict[str, Callable[[Bench], list[Row]]] = {
    "save": row_save,
    "prepare": row_prepare,
    "complete": row_complete,
    "single": row_single,
    "cycles": row_cycles,
    "progress": row_progress,
    "e2e": row_e2e,
    "concurrency": row_concurrency,
    "import": row_import,
    "volume": row_volume,
}

__all__ = [
    "ROW_FUNCTIONS",
    "row_complete",
    "row_concurrency",
    "row_cycles",
    "row_e2e",
    "row_import",
    "row_prepare",
    "row_progress",
    "row_save",
    "row_single",
    "row_volume",
]
