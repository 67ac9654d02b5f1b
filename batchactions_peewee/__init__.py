"""batchactions-peewee: batch-job state in any Peewee database, shared by many workers."""

from .domain import (
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
from .errors import BatchActionsError
from .ports import (
    DistributedStateStore,
    InMemoryStateStore,
    StateStore,
    is_distributed_state_store,
)
from .store import PeeweeStateStore
from .worker import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    BatchResult,
    JobCompleted,
    LeaseLost,
    PrepareResult,
    ProcessingContext,
    RecordFailed,
    Worker,
    WorkerEvent,
    WorkerSummary,
    prepare_job,
)

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchActionsError",
    "BatchClaimed",
    "BatchCompleted",
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
    "JobCompleted",
    "JobConfig",
    "JobProgress",
    "JobState",
    "JobStatus",
    "LeaseLost",
    "PeeweeStateStore",
    "PrepareResult",
    "ProcessedRecord",
    "ProcessingContext",
    "RecordFailed",
    "RecordStatus",
    "StateStore",
    "ValidationError",
    "Worker",
    "WorkerEvent",
    "WorkerSummary",
    "is_distributed_state_store",
    "prepare_job",
]
