"""The engine: prepare a job from a source, and work it from any number of workers.

It talks to stores through the ports only (``ports``, ``engine.io``) and imports no Peewee.
"""

from .events import (
    BatchClaimed,
    BatchCompleted,
    BatchFailed,
    BatchResult,
    EventHandler,
    JobCompleted,
    LeaseLost,
    ProcessingContext,
    RecordFailed,
    WorkerEvent,
    WorkerSummary,
)
from .prepare import PrepareResult, prepare_job
from .worker import Worker, default_worker_id

__all__ = [
    "BatchClaimed",
    "BatchCompleted",
    "BatchFailed",
    "BatchResult",
    "EventHandler",
    "JobCompleted",
    "LeaseLost",
    "PrepareResult",
    "ProcessingContext",
    "RecordFailed",
    "Worker",
    "WorkerEvent",
    "WorkerSummary",
    "default_worker_id",
    "prepare_job",
]
