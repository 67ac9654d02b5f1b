"""What ``Worker`` and ``AsyncWorker`` share: their settings, checked once as a worker is
built, the record and batch processing built from those settings, and how both report
(events and log fields). The loops themselves, one blocking and one a coroutine, are in
``worker.py`` and ``async_worker.py``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pydantic

from ..checks import check_worker_id
from ..errors import InvalidInputError, InvalidValueError
from ..logfields import log_fields
from ..model import BatchReservation, ProcessedRecord
from .batch import Processor, RecordProcessing
from .batch_processor import BatchProcessing, no_record_processor
from .concurrency import check_concurrency
from .events import EventHandler, JobAborted, WorkerEvent, record_failed_event
from .hooks import JobHooks, check_hooks, record_processing
from .runs import Tally, default_worker_id, emit_safely, non_negative, poll_interval_s
from .validation import check_schema


class WorkerBase:
    """The settings of a worker, checked, and what is built from them as they are when a
    batch starts: every setting is a public attribute that may change between batches."""

    #: Store failures in a row that ``run`` outlives; the next one is raised.
    store_error_limit: int = 10
    #: The longest pause (seconds) before trying again after a store failure.
    store_backoff_cap_s: float = 5.0
    #: The worker module's logger: its messages keep that module's name.
    _logger: ClassVar[logging.Logger]

    def __init__(
        self,
        processor: Processor | None,
        *,
        has_batch_processor: bool,
        transactional: bool,
        worker_id: str | None,
        schema: type[pydantic.BaseModel] | None,
        continue_on_error: bool,
        max_retries: int,
        retry_delay_ms: int,
        lease_timeout_ms: int,
        on_event: EventHandler | None,
        hooks: JobHooks | None,
        concurrency: int,
    ) -> None:
        self.processor = processor
        self.transactional = transactional
        self.worker_id = check_worker_id(
            worker_id if worker_id is not None else default_worker_id()
        )
        self.schema = check_schema(schema)
        self.hooks = check_hooks(hooks, has_schema=self.schema is not None)
        self.continue_on_error = bool(continue_on_error)
        self.max_retries = non_negative(max_retries, "max_retries")
        self.retry_delay_ms = non_negative(retry_delay_ms, "retry_delay_ms")
        self.lease_timeout_ms = non_negative(lease_timeout_ms, "lease_timeout_ms")
        if self.lease_timeout_ms == 0:
            raise InvalidValueError("lease_timeout_ms must be positive")
        self.on_event = on_event
        self.concurrency = check_concurrency(concurrency)
        if has_batch_processor and self.concurrency != 1:
            raise InvalidInputError(
                "concurrency is the records of a batch in flight for a record processor; "
                "a batch_processor gets the whole batch in one call"
            )
        self._total_records: dict[str, int] = {}  # each job's, read once

    # -- processing -----------------------------------------------------------------------

    def _record_processing(self) -> RecordProcessing:
        """Each record's validation, hooks, call and retries, as the settings are now."""
        processor = self.processor or no_record_processor  # None with a batch processor
        return record_processing(
            processor, self.schema, self.max_retries, self.retry_delay_ms, self._wait, self.hooks
        )

    def _batch_processing(
        self,
        call: Callable[[list[dict[str, Any]], Any], Any],
        store: object,
        wait: Callable[[float, threading.Event], None] | None = None,
    ) -> BatchProcessing:
        """A batch processor's call with the records' steps around it (``batch_processor``),
        as the settings are now; ``store`` is the one its transaction runs on."""
        return BatchProcessing.of(
            call,
            schema=self.schema,
            hooks=self.hooks,
            max_retries=self.max_retries,
            retry_delay_ms=self.retry_delay_ms,
            wait=wait or self._wait,
            continue_on_error=self.continue_on_error,
            worker_id=self.worker_id,
            store=store,
            transactional=self.transactional,
        )

    def _wait(self, seconds: float, lease_lost: threading.Event) -> None:
        """A processor's wait before a retry; it ends early when the lease is lost."""
        lease_lost.wait(seconds)

    # -- reporting ------------------------------------------------------------------------

    def _aborted(self, job_id: str, tally: Tally) -> bool:
        """The run ends: the job was aborted."""
        self._logger.info(
            "job %s was aborted; worker %s stops",
            job_id,
            self.worker_id,
            extra=log_fields(job_id, worker_id=self.worker_id),
        )
        tally.stopped = "aborted"
        self._emit(JobAborted(job_id, self.worker_id))
        return True

    def _emit(self, event: WorkerEvent) -> None:
        if self.on_event is not None:
            emit_safely(self.on_event, event, self.worker_id, self._logger)

    def _emit_record_failed(self, res: BatchReservation, record: ProcessedRecord) -> None:
        if self.on_event is not None:
            self._emit(record_failed_event(res, self.worker_id, record))

    def _fields(self, res: BatchReservation) -> dict[str, str | None]:
        return log_fields(res.job_id, res.batch_id, self.worker_id)

    def _log_finalized(self, job_id: str) -> None:
        self._logger.info(
            "worker %s finalized job %s",
            self.worker_id,
            job_id,
            extra=log_fields(job_id, worker_id=self.worker_id),
        )

    @property
    def _poll_interval_s(self) -> float:
        return poll_interval_s(self.lease_timeout_ms)
