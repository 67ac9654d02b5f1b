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

__version__ = "0.1.0"

__all__ = [
    "Batch",
    "BatchActionsError",
    "BatchReservation",
    "BatchState",
    "BatchStatus",
    "ClaimBatchResult",
    "ClaimFailureReason",
    "DistributedJobStatus",
    "DistributedStateStore",
    "InMemoryStateStore",
    "JobConfig",
    "JobProgress",
    "JobState",
    "JobStatus",
    "PeeweeStateStore",
    "ProcessedRecord",
    "RecordStatus",
    "StateStore",
    "ValidationError",
    "is_distributed_state_store",
]
