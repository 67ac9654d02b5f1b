"""The ports: what a store must offer, as ``typing.Protocol`` classes.

``StateStore`` and ``DistributedStateStore`` are the public ports of the TypeScript core;
``WorkerStore`` adds the fenced lease methods a :class:`~batchactions_peewee.Worker` needs.
``WorkerIO`` is internal: the bulk forms that both stores of this package offer the engine
in place of several port calls (see ``engine.io``); ``TransactionalIO`` (``PeeweeStateStore``
only) runs a batch processor and the batch's completion in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .model import (
    BatchReservation,
    BatchState,
    BatchStatus,
    ClaimBatchResult,
    DistributedJobStatus,
    JobProgress,
    JobState,
    JobStatus,
    Processed,
    ProcessedRecord,
)


@runtime_checkable
class StateStore(Protocol):
    """Persists a job's state and its records."""

    def save_job_state(self, job: JobState) -> None: ...
    def get_job_state(self, job_id: str) -> JobState | None: ...
    def update_batch_state(self, job_id: str, batch_id: str, state: BatchState) -> None: ...
    def save_processed_record(
        self, job_id: str, batch_id: str, record: ProcessedRecord
    ) -> None: ...
    def get_failed_records(self, job_id: str) -> list[ProcessedRecord]: ...
    def get_pending_records(self, job_id: str) -> list[ProcessedRecord]: ...
    def get_processed_records(self, job_id: str) -> list[ProcessedRecord]: ...
    def get_progress(self, job_id: str) -> JobProgress: ...


@runtime_checkable
class DistributedStateStore(StateStore, Protocol):
    """A StateStore through which many workers share one job."""

    def claim_batch(self, job_id: str, worker_id: str) -> ClaimBatchResult: ...
    def release_batch(self, job_id: str, batch_id: str, worker_id: str) -> None: ...
    def reclaim_stale_batches(self, job_id: str, timeout_ms: int) -> int: ...
    def save_batch_records(
        self, job_id: str, batch_id: str, records: Iterable[ProcessedRecord]
    ) -> None: ...
    def get_batch_records(self, job_id: str, batch_id: str) -> list[ProcessedRecord]: ...
    def get_distributed_status(self, job_id: str) -> DistributedJobStatus: ...
    def try_finalize_job(self, job_id: str) -> bool: ...


def is_distributed_state_store(obj: object) -> bool:
    """True when ``obj`` has every method of the DistributedStateStore port."""
    return isinstance(obj, DistributedStateStore)


class WorkerStore(DistributedStateStore, Protocol):
    """What a worker needs: the DistributedStateStore port plus the fenced lease methods
    that both ``PeeweeStateStore`` and ``InMemoryStateStore`` have."""

    def heartbeat(self, reservation: BatchReservation) -> bool: ...
    def complete_batch(
        self,
        reservation: BatchReservation,
        *,
        status: BatchStatus = BatchStatus.COMPLETED,
        processed_count: int,
        failed_count: int,
        records: Iterable[ProcessedRecord] = (),
    ) -> bool: ...


class WorkerIO(Protocol):
    """The engine's bulk forms of port calls (internal).

    A store of this package is its own ``WorkerIO`` (``store._worker_io()``); for any other
    store ``engine.io.PortsOnly`` does the same through the port methods alone. Each form
    writes and reads exactly what its port counterpart would.
    """

    def _save_pending_records(
        self, job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
    ) -> None:
        """``save_batch_records`` of PENDING records whose raw and parsed forms are the
        given dicts, indexed from ``first_index``."""

    def _get_batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        """``get_batch_records`` as (index, raw) pairs, by record index."""

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
        """``complete_batch`` with the records processed without error given as (index,
        raw, parsed) in ``processed``, and only the others as ProcessedRecords."""

    def _release_reservation(self, reservation: BatchReservation) -> bool:
        """``release_batch`` fenced by the reservation's version; True if it still held."""

    def _activate_job(self, job: JobState) -> bool:
        """``save_job_state`` of a CREATED job's final form (PROCESSING, with its batches),
        only while the job is still CREATED; False, writing nothing, once it was aborted or
        deleted meanwhile."""

    def _job_status(self, job_id: str) -> JobStatus | None:
        """The job's status alone (None: no such job), without reading its batches."""

    def _close_connection(self) -> None:
        """Close the calling thread's connection, if the store keeps one per thread."""


@dataclass(frozen=True, slots=True)
class Completion:
    """What a batch's fenced completion writes: ``complete_batch``'s arguments, with the
    records processed without error as (index, raw, parsed) in ``processed``."""

    status: BatchStatus
    processed_count: int
    failed_count: int
    processed: Sequence[Processed] = ()
    records: Sequence[ProcessedRecord] = ()


class TransactionalIO(Protocol):
    """A store that can run a batch processor and the batch's fenced completion in one
    transaction of its database (``PeeweeStateStore``; internal)."""

    database: Any

    def _complete_batch_in_transaction(
        self, reservation: BatchReservation, produce: Callable[[], Completion]
    ) -> bool:
        """``produce()``, then the fenced completion it returns, in one transaction; a
        completion fenced off rolls back what ``produce`` wrote, and the answer is False."""


#: The port methods that the ``WorkerIO`` forms stand in for.
STOOD_IN_FOR = ("save_batch_records", "get_batch_records", "complete_batch", "release_batch")


def overrides(store: object, base: type, names: Iterable[str]) -> bool:
    """True when ``store``'s class replaces any of ``base``'s methods ``names``: a subclass
    that overrides a port method must get its override called, not a bulk form of ours."""
    return any(getattr(type(store), name, None) is not getattr(base, name) for name in names)
