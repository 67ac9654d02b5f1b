"""batchactions-peewee: batch jobs kept in any Peewee database, shared by many workers.

Split a large source (a CSV file, a query, any iterable of dicts) into batches stored in
your own SQLite, MySQL/MariaDB or PostgreSQL database, then let any number of worker
processes, on one machine or many, claim batches atomically, renew their leases, take over
the batches of workers that died, and finish the job exactly once.

Where to start::

    store = PeeweeStateStore(database)   # any peewee Database; tables of its own
    store.create_tables()
    job = prepare_job(store, records, batch_size=500)
    Worker(store, processor).run(job.job_id)   # in as many processes as you like

The command line (``batchactions-peewee --help``) does the same for CSV and JSON Lines
files. Every name of the public contract is importable from this package; the errors are
in :mod:`batchactions_peewee.errors`.
"""

import importlib
from typing import TYPE_CHECKING, Any

from .engine import (
    BatchClaimed,
    BatchCompleted,
    BatchContext,
    BatchFailed,
    BatchResult,
    JobAborted,
    JobCompleted,
    JobHooks,
    JobPaused,
    JobResumed,
    LeaseLost,
    PrepareResult,
    PreviewResult,
    ProcessingContext,
    RecordFailed,
    StoreErrorOutlived,
    Worker,
    WorkerEvent,
    WorkerSummary,
    prepare_job,
    prepare_retry_job,
    preview_records,
)
from .errors import BatchActionsError
from .memory import InMemoryStateStore
from .metrics import metrics_text
from .model import (
    Batch,
    BatchReservation,
    BatchState,
    BatchStatus,
    ClaimBatchResult,
    ClaimFailureReason,
    DistributedJobStatus,
    JobConfig,
    JobProgress,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
)
from .ports import DistributedStateStore, StateStore, is_distributed_state_store
from .store import PeeweeStateStore

__version__ = "0.1.0"

#: Names importable from here whose modules load only when first asked for: they need the
#: ``[asyncio]`` extra (greenlet and the async drivers), which a core install lacks.
_ASYNC_NAMES = {
    "AsyncPeeweeStateStore": ".store.async_facade",
    "AsyncWorker": ".engine.async_worker",
}


def __getattr__(name: str) -> Any:
    module = _ASYNC_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


if TYPE_CHECKING:
    from .engine.async_worker import AsyncWorker
    from .store.async_facade import AsyncPeeweeStateStore

__all__ = [
    "AsyncPeeweeStateStore",
    "AsyncWorker",
    "Batch",
    "BatchActionsError",
    "BatchClaimed",
    "BatchCompleted",
    "BatchContext",
    "BatchFailed",
    "BatchReservation",
    "BatchResult",
    "BatchState",
    "BatchStatus",
    "ClaimBatchResult",
    "ClaimFailureReason",
    "DistributedJobStatus",
    "DistributedStateStore",
    "InMemoryStateStore",
    "JobAborted",
    "JobCompleted",
    "JobConfig",
    "JobHooks",
    "JobPaused",
    "JobProgress",
    "JobResumed",
    "JobState",
    "JobStatus",
    "LeaseLost",
    "PeeweeStateStore",
    "PrepareResult",
    "PreviewResult",
    "ProcessedRecord",
    "ProcessingContext",
    "RecordFailed",
    "RecordStatus",
    "StateStore",
    "StoreErrorOutlived",
    "ValidationError",
    "Worker",
    "WorkerEvent",
    "WorkerSummary",
    "is_distributed_state_store",
    "metrics_text",
    "prepare_job",
    "prepare_retry_job",
    "preview_records",
]
