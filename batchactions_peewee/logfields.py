"""The fields every log line of a running job carries.

Each line the library logs goes through a logger under ``batchactions_peewee`` (the
module's ``__name__``). Lines about a job pass ``extra=log_fields(...)``, so a JSON log
formatter (or ``%(job_id)s`` in a format string) finds ``job_id``, ``batch_id`` and
``worker_id`` on the record: the three are always set together, ``None`` where a line is
not about a batch (or not about a worker).
"""

from __future__ import annotations

#: The names of the fields, as attributes of each ``logging.LogRecord``.
LOG_FIELDS = ("job_id", "batch_id", "worker_id")


def log_fields(
    job_id: str | None = None, batch_id: str | None = None, worker_id: str | None = None
) -> dict[str, str | None]:
    """The ``extra=`` of a log line about a job, a batch of it, or a worker's part in it."""
    return {"job_id": job_id, "batch_id": batch_id, "worker_id": worker_id}
