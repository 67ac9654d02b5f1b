"""How the engine reads and writes a store: through the store's own bulk forms when it has
them (``ports.WorkerIO``), else through the port methods alone (``PortsOnly``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import InvalidValueError
from ..model import (
    BatchReservation,
    BatchStatus,
    JobState,
    JobStatus,
    Processed,
    ProcessedRecord,
    RecordStatus,
    trusted_record,
)
from ..ports import WorkerIO, WorkerStore

logger = logging.getLogger(__name__)


def worker_io(store: object) -> WorkerIO:
    """``store``'s bulk forms where it offers them, else ``PortsOnly`` over its ports."""
    own = getattr(store, "_worker_io", None)
    io: WorkerIO | None = own() if callable(own) else None
    return io if io is not None else PortsOnly(store)  # type: ignore[arg-type]


def close_connection(store: object) -> None:
    """Close the calling thread's connection to ``store``'s database, if it keeps one."""
    try:
        worker_io(store)._close_connection()
    except Exception:
        logger.debug("could not close this thread's connection", exc_info=True)


class PortsOnly:
    """The engine's bulk forms done through the port methods of any store (a third-party
    ``DistributedStateStore``, or a subclass of ours that overrides a port method)."""

    def __init__(self, store: WorkerStore) -> None:
        self.store = store

    def _save_pending_records(
        self, job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
    ) -> None:
        self.store.save_batch_records(job_id, batch_id, pending_records(first_index, records))

    def _get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        return [(r.index, r.raw) for r in self.store.get_batch_records(job_id, batch_id)]

    def _complete_batch_processed(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        processed: Iterable[Processed],
        records: Iterable[ProcessedRecord] = (),
    ) -> bool:
        done = [
            trusted_record(index, raw, parsed, RecordStatus.PROCESSED, retry_count=0)
            for index, raw, parsed in processed
        ]
        return self.store.complete_batch(
            reservation,
            status=status,
            processed_count=processed_count,
            failed_count=failed_count,
            records=sorted([*done, *records], key=lambda record: record.index),
        )

    def _release_reservation(self, reservation: BatchReservation) -> bool:
        r = reservation
        self.store.release_batch(r.job_id, r.batch_id, r.worker_id)
        return True

    def _activate_job(self, job: JobState) -> bool:
        # A port has no conditional write: read, then save. Only our stores close the gap.
        found = self.store.get_job_state(job.id)
        if found is None or JobStatus(found.status) != JobStatus.CREATED:
            return False
        self.store.save_job_state(job)
        return True

    def _job_status(self, job_id: str) -> JobStatus | None:
        job = self.store.get_job_state(job_id)
        return None if job is None else JobStatus(job.status)

    def _close_connection(self) -> None:
        """The port has no connections to close."""


def pending_records(first: int, chunk: Iterable[Mapping[str, Any]]) -> list[ProcessedRecord]:
    """Source records as PENDING ProcessedRecords indexed from ``first``, for a store
    without its own bulk form."""
    dicts = [dict(data) for data in chunk]
    for index, data in enumerate(dicts, first):
        bad = next((k for k in data if not isinstance(k, str)), None)
        if bad is not None:
            raise InvalidValueError(
                f"record {index} cannot be stored as JSON: key {bad!r} is no string"
            )
    # Built without validation: the fields are checked above, and the store checks the
    # values before anything is written.
    return [
        ProcessedRecord.model_construct(
            index=index,
            raw=data,
            parsed=data,
            status=RecordStatus.PENDING,
            errors=[],
            processing_error=None,
            retry_count=None,
        )
        for index, data in enumerate(dicts, first)
    ]
