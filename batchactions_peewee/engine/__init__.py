"""The engine: prepare a job from a source, and work it from any number of workers.

It talks to stores through the ports only (``ports``, ``engine.io``) and imports no Peewee.
"""

from .batch_processor import BatchContext, BatchProcessor
from .events import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    BatchResult,
    EventHandler,
    JobAborted,
    JobCompleted,
    JobPaused,
    JobResumed,
    LeaseLost,
    ProcessingContext,
    RecordFailed,
    StoreErrorOutlived,
    WorkerEvent,
    WorkerSummary,
)
from .hooks import AfterProcess, AfterValidate, BeforeProcess, BeforeValidate, JobHooks
from .prepare import PrepareResult, prepare_job
from .retry import PreviewResult, prepare_retry_job, preview_records
from .worker import Worker, default_worker_id

__all__ = [
    "AfterProcess",
    "AfterValidate",
    "BatchClaimed",
    "BatchCompleted",
    "BatchContext",
    "BatchFailed",
    "BatchProcessor",
    "BatchResult",
    "BeforeProcess",
    "BeforeValidate",
    "EventHandler",
    "JobAborted",
    "JobCompleted",
    "JobHooks",
    "JobPaused",
    "JobResumed",
    "LeaseLost",
    "PrepareResult",
    "PreviewResult",
    "ProcessingContext",
    "RecordFailed",
    "StoreErrorOutlived",
    "Worker",
    "WorkerEvent",
    "WorkerSummary",
    "default_worker_id",
    "prepare_job",
    "prepare_retry_job",
    "preview_records",
]
