"""prepare_job and Worker: split a source into batches, then process them from many workers.

``prepare_job`` streams any iterable of dicts into a distributed job: one bulk insert per
batch, so memory stays flat whatever the source's size. Any number of :class:`Worker` s, in
any number of processes or machines, then share the job through the store: each claims a
batch, validates and processes its records, and writes the results with the store's fenced
``complete_batch``, so a worker whose lease was taken over cannot overwrite the new owner.

Processing is at least once: a batch whose worker died is processed again from its first
record by the worker that reclaims it, so a processor with side effects should be idempotent.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import peewee as pw
import pydantic

from .codec import check_id, check_worker_id
from .domain import (
    Batch,
    BatchReservation,
    BatchStatus,
    ClaimFailureReason,
    JobConfig,
    JobState,
    JobStatus,
    ProcessedRecord,
    RecordStatus,
    trusted_record,
)
from .errors import InvalidInputError, InvalidValueError, JobExistsError, JobNotFoundError
from .ports import (
    DistributedStateStore,
    PendingRecordsWriter,
    ProcessedRecordsWriter,
    RawRecordsReader,
)
from .validation import check_schema, utf8_text, validate_record

logger = logging.getLogger(__name__)


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


# -- results and events ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """What ``prepare_job`` wrote: the job id, its record count and its batch count."""

    job_id: str
    total_records: int
    total_batches: int


@dataclass(frozen=True, slots=True)
class ProcessingContext:
    """Where the record given to the processor sits in its job.

    ``lease_lost`` is set once the worker knows another worker may own the batch: a long
    processor may check it and give up early (its result would be discarded anyway).
    """

    job_id: str
    batch_id: str
    batch_index: int
    record_index: int
    total_records: int
    lease_lost: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of ``Worker.process_next``.

    ``processed_count`` / ``failed_count`` count what this worker wrote (invalid records
    count as failed; nothing is written when the lease was lost). ``job_complete`` is True
    when every batch of the job is COMPLETED or FAILED (or the job had none and is done).
    Beyond SPEC: ``retries`` (processor retries made), ``lease_lost``, ``finalized`` (this
    call finalized the job) and ``reason`` (why nothing was claimed).
    """

    claimed: bool
    job_id: str
    batch_id: str | None = None
    batch_index: int | None = None
    processed_count: int = 0
    failed_count: int = 0
    job_complete: bool = False
    retries: int = 0
    lease_lost: bool = False
    finalized: bool = False
    reason: ClaimFailureReason | None = None


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """The outcome of ``Worker.run``: batches written, records processed and failed by this
    worker, and whether it was the one worker that finalized the job. Beyond SPEC:
    ``retries``, ``leases_lost`` (batches abandoned because another worker took them) and
    ``store_errors`` (database failures the run outlived: see ``Worker.run``)."""

    job_id: str
    worker_id: str
    batches: int
    processed: int
    failed: int
    finalized: bool
    retries: int = 0
    leases_lost: int = 0
    store_errors: int = 0


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    """Base of the events a worker passes to ``on_event``."""

    job_id: str
    worker_id: str


@dataclass(frozen=True, slots=True)
class BatchClaimed(WorkerEvent):
    """The worker claimed a batch and is about to process it."""

    batch_id: str
    batch_index: int
    record_start_index: int
    record_end_index: int


@dataclass(frozen=True, slots=True)
class BatchCompleted(WorkerEvent):
    """A batch was written as COMPLETED (some of its records may have failed)."""

    batch_id: str
    batch_index: int
    processed_count: int
    failed_count: int
    retries: int
    elapsed_ms: int


@dataclass(frozen=True, slots=True)
class BatchFailed(WorkerEvent):
    """A batch was written as FAILED: a record failed and ``continue_on_error`` is False."""

    batch_id: str
    batch_index: int
    processed_count: int
    failed_count: int
    retries: int
    elapsed_ms: int
    record_index: int
    error: str


@dataclass(frozen=True, slots=True)
class RecordFailed(WorkerEvent):
    """A record failed validation (status invalid) or processing (status failed)."""

    batch_id: str
    batch_index: int
    record_index: int
    status: RecordStatus
    error: str
    retry_count: int


@dataclass(frozen=True, slots=True)
class LeaseLost(WorkerEvent):
    """Another worker may own the batch now: this worker's results were not written."""

    batch_id: str
    batch_index: int


@dataclass(frozen=True, slots=True)
class JobCompleted(WorkerEvent):
    """This worker finalized the job; its summary as ``get_progress`` reports it."""

    status: JobStatus
    total: int
    processed: int
    failed: int
    elapsed_ms: int


Processor = Callable[[dict[str, Any], ProcessingContext], object]
#: A record processed without error: (index, raw, parsed, retries).
_Done = tuple[int, dict[str, Any], dict[str, Any], int]
EventHandler = Callable[[WorkerEvent], object]


# -- prepare_job ----------------------------------------------------------------------


def prepare_job(
    store: DistributedStateStore,
    records: Iterable[Mapping[str, Any]],
    *,
    batch_size: int = 500,
    job_id: str | None = None,
    config: JobConfig | Mapping[str, Any] | None = None,
    schema: type[pydantic.BaseModel] | None = None,
) -> PrepareResult:
    """Stream ``records`` (dicts) into batches of ``batch_size`` and leave a PROCESSING
    distributed job that workers can share.

    Memory stays flat: one batch is held at a time and written with one bulk insert. The
    job id is a new uuid4 unless ``job_id`` is given; an id that exists raises
    ``JobExistsError`` and writes nothing. ``config`` supplies further settings (kept as
    given); its batch size is replaced by ``batch_size`` and, when ``schema`` (a pydantic
    model class) is given, its schema by the model's JSON Schema. An empty source gives a
    job that is already COMPLETED, with no batches.

    The job is saved as CREATED first and becomes PROCESSING, with all its batches, in one
    final write; a crash before then leaves a job that workers refuse to claim
    (JOB_NOT_PROCESSING). Bad input (a record that is not a dict, a value with no JSON
    form) raises the store's error (``InvalidInputError`` / ``InvalidValueError``); the
    partly written job is then deleted when the store can (``delete_job``). Two concurrent
    calls with the same explicit ``job_id`` are not detected reliably: don't make them.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    job_id = check_id(job_id if job_id is not None else str(uuid.uuid4()), "job id")
    job_config = _job_config(config, batch_size, check_schema(schema))
    if store.get_job_state(job_id) is not None:
        raise JobExistsError(f"job {job_id!r} already exists")
    store.save_job_state(JobState(id=job_id, config=job_config, status=JobStatus.CREATED))
    try:
        batches, total = _write_batches(store, job_id, records, batch_size)
        now = _now(store)
        store.save_job_state(
            JobState(
                id=job_id,
                config=job_config,
                # Only this write makes the job claimable, and it carries every batch.
                status=JobStatus.PROCESSING if batches else JobStatus.COMPLETED,
                batches=batches,
                total_records=total,
                started_at=now,
                completed_at=None if batches else now,
                distributed=True,
            )
        )
    except BaseException:
        _discard(store, job_id)
        raise
    return PrepareResult(job_id=job_id, total_records=total, total_batches=len(batches))


def _job_config(
    config: JobConfig | Mapping[str, Any] | None,
    batch_size: int,
    schema: type[pydantic.BaseModel] | None,
) -> JobConfig:
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, JobConfig):
        data = config.model_dump(by_alias=True, exclude_none=True)
    elif isinstance(config, Mapping):
        # Through JobConfig once, so snake_case and camelCase keys land on the same field.
        given = {k: v for k, v in config.items() if k not in ("batch_size", "batchSize")}
        data = _validated_config({"batchSize": batch_size, **given}).model_dump(
            by_alias=True, exclude_none=True
        )
    else:
        raise InvalidInputError(f"config must be a JobConfig or a dict, got {config!r}")
    data["batchSize"] = batch_size
    if schema is not None:
        try:
            data["schema"] = schema.model_json_schema()
        except pydantic.PydanticUserError as exc:
            raise InvalidInputError(f"schema {schema.__name__} has no JSON Schema: {exc}") from None
    return _validated_config(data)


def _validated_config(data: dict[str, Any]) -> JobConfig:
    try:
        return JobConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise InvalidInputError(f"config is not a valid JobConfig: {exc}") from None


def _write_batches(
    store: DistributedStateStore,
    job_id: str,
    records: Iterable[Mapping[str, Any]],
    batch_size: int,
) -> tuple[list[Batch], int]:
    batches: list[Batch] = []
    chunk: list[dict[str, Any]] = []
    bulk = (
        store
        if isinstance(store, PendingRecordsWriter)
        and _bulk_path(store, "save_pending_records", "save_batch_records")
        else None
    )
    total = 0

    def flush() -> None:
        first = total - len(chunk)
        batch = Batch(
            id=str(uuid.uuid4()),
            index=len(batches),
            status=BatchStatus.PENDING,
            record_start_index=first,
            record_end_index=total - 1,
        )
        if bulk is not None:
            bulk.save_pending_records(job_id, batch.id, first, chunk)
        else:
            store.save_batch_records(job_id, batch.id, _pending_records(first, chunk))
        batches.append(batch)
        chunk.clear()

    for record in records:
        # Copied: a source may hand out one dict, changed for each record.
        if type(record) is dict:
            chunk.append(record.copy())
        elif isinstance(record, Mapping):
            chunk.append(dict(record))
        else:
            raise InvalidInputError(f"record {total} is a {type(record).__name__}, not a dict")
        total += 1
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return batches, total


def _pending_records(first: int, chunk: list[dict[str, Any]]) -> list[ProcessedRecord]:
    """The chunk as PENDING records, for a store without ``save_pending_records``."""
    for index, data in enumerate(chunk, first):
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
        for index, data in enumerate(chunk, first)
    ]


def _discard(store: DistributedStateStore, job_id: str) -> None:
    delete = getattr(store, "delete_job", None)
    if delete is None:
        return
    try:
        delete(job_id)
    except Exception:
        logger.exception("could not delete the partly prepared job %s", job_id)


def _now(store: object) -> int:
    """The store's clock (both stores have ``now()``), else this machine's, in epoch ms."""
    now = getattr(store, "now", None)
    return int(now()) if callable(now) else int(time.time() * 1000)


# -- Worker ---------------------------------------------------------------------------


def default_worker_id() -> str:
    """Host, pid and a random suffix: unique per worker, at most 128 characters."""
    host = socket.gethostname()[:80] or "worker"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


class _Held:
    """One reservation that ``_Leases`` renews through ``store`` every ``interval_s``;
    ``lost`` is set once a renewal is refused."""

    __slots__ = ("due", "interval_s", "lost", "reservation", "store")

    def __init__(self, reservation: BatchReservation, store: WorkerStore, interval_s: float):
        self.reservation = reservation
        self.store = store
        self.interval_s = interval_s
        self.due = time.monotonic() + interval_s
        self.lost = threading.Event()


class _Leases:
    """Renews the reservations a worker holds from one daemon thread.

    The thread is started with the first reservation and lives until ``close`` (``run``
    keeps it for the whole job: starting and joining a thread per batch cost a twentieth of
    a worker's time). A renewal that raises (say, the database is briefly unreachable) is
    logged and tried again next interval; one that is refused (the batch was reclaimed)
    sets the reservation's ``lost``. Should the thread die (a renewal raised a
    BaseException), what it held counts as lost and the next ``hold`` starts a new thread.
    A renewal may still be in flight when its batch is released or completed: it is fenced
    by the reservation's version, so it then changes nothing.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._changed = threading.Condition()
        self._held: list[_Held] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def hold(self, reservation: BatchReservation, store: WorkerStore, interval_s: float) -> _Held:
        """Renew ``reservation`` through ``store`` every ``interval_s`` until released."""
        held = _Held(reservation, store, interval_s)
        with self._changed:
            self._held.append(held)
            if self._thread is None or not self._thread.is_alive():
                stop = threading.Event()
                thread = threading.Thread(
                    target=self._renew, args=(stop,), name=self._name, daemon=True
                )
                try:
                    thread.start()
                except BaseException:
                    self._held.remove(held)
                    raise
                self._thread, self._stop = thread, stop
            self._changed.notify_all()
        return held

    def release(self, held: _Held) -> None:
        with self._changed:
            if held in self._held:  # a lost reservation is dropped by the thread
                self._held.remove(held)

    def close(self) -> None:
        """Stop the thread (and close its connections) unless a reservation is still held."""
        with self._changed:
            if self._held or self._thread is None:
                return
            thread, self._thread = self._thread, None
            self._stop.set()
            self._changed.notify_all()
        thread.join()

    def _renew(self, stop: threading.Event) -> None:
        stores: list[WorkerStore] = []  # whose connections this thread may have opened
        try:
            with self._changed:
                while not stop.is_set():
                    now = time.monotonic()
                    due = [h for h in self._held if h.due <= now]
                    if not due:
                        next_due = min((h.due for h in self._held), default=None)
                        self._changed.wait(None if next_due is None else next_due - now)
                        continue
                    for held in due:
                        held.due = now + held.interval_s
                        if not any(held.store is s for s in stores):
                            stores.append(held.store)
                    self._changed.release()  # the database calls run without the lock
                    try:
                        lost = [held for held in due if not _renew_one(held)]
                    finally:
                        self._changed.acquire()
                    self._held = [h for h in self._held if h not in lost]
        finally:
            with self._changed:
                if self._thread is threading.current_thread() and not stop.is_set():
                    # Died (a renewal raised a BaseException): nobody renews what is held
                    # now, so it counts as lost; the next hold() starts a new thread.
                    self._thread = None
                    for held in self._held:
                        held.lost.set()
                    self._held = []
            for store in stores:
                _close_thread_connection(store)


def _renew_one(held: _Held) -> bool:
    """Renew one reservation; False once it is lost (the batch was reclaimed)."""
    try:
        renewed = held.store.heartbeat(held.reservation)
    except Exception:
        logger.warning("lease renewal failed; trying again", exc_info=True)
        return True
    if not renewed:
        held.lost.set()
    return renewed


def _bulk_path(store: object, bulk: str, port: str) -> bool:
    """True when ``store``'s ``bulk`` method may stand in for its ``port`` method: the store
    has it, and no class below the one that defines it overrides the port method (a
    subclass of ours that overrides ``complete_batch`` gets its override called)."""
    owners = {
        name: next((c for c in type(store).__mro__ if name in vars(c)), None)
        for name in (bulk, port)
    }
    bulk_owner, port_owner = owners[bulk], owners[port]
    if bulk_owner is None:  # not a method of the class: an instance's or a proxy's own
        return callable(getattr(store, bulk, None))
    return port_owner is None or issubclass(bulk_owner, port_owner)


def _close_thread_connection(store: object) -> None:
    # Peewee keeps one connection per thread: close the one this thread opened, if any.
    database = getattr(store, "database", None)
    if isinstance(database, (pw.Database, pw.DatabaseProxy)):
        try:
            if not database.is_closed():
                database.close()
        except Exception:
            logger.debug("could not close the lease thread's connection", exc_info=True)


def _is_outage(exc: BaseException) -> bool:
    """True for a database failure that trying again later may cure (server gone, connection
    cut, a lock or deadlock that outlived the store's own retries); False for errors of the
    query itself (constraint, syntax, data), which would only fail again."""
    return isinstance(exc, (pw.DatabaseError, pw.InterfaceError)) and not isinstance(
        exc, (pw.IntegrityError, pw.ProgrammingError, pw.DataError, pw.NotSupportedError)
    )


@dataclass
class _Tally:
    """What ``Worker.run`` has done so far."""

    batches: int = 0
    processed: int = 0
    failed: int = 0
    retries: int = 0
    leases_lost: int = 0
    store_errors: int = 0
    finalized: bool = False

    def add(self, result: BatchResult) -> None:
        self.finalized = self.finalized or result.finalized
        if not result.claimed:
            return
        if result.lease_lost:
            self.leases_lost += 1
        else:
            self.batches += 1
        self.processed += result.processed_count
        self.failed += result.failed_count
        self.retries += result.retries


@dataclass
class _BatchWork:
    """What processing one batch's records produced: the records processed without error
    as (index, raw, parsed) in ``done`` (their retries in ``done_retries``), the others in
    ``records``."""

    done: list[tuple[int, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    done_retries: list[int] = field(default_factory=list)
    records: list[ProcessedRecord] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    retries: int = 0
    failure: ProcessedRecord | None = None  # the record that failed the batch
    lease_lost: bool = False

    def all_records(self) -> list[ProcessedRecord]:
        """Every record as a ProcessedRecord, by index: for a store with ``complete_batch``
        only."""
        done = [
            trusted_record(index, raw, parsed, RecordStatus.PROCESSED, retry_count=retries)
            for (index, raw, parsed), retries in zip(self.done, self.done_retries, strict=True)
        ]
        return sorted([*done, *self.records], key=lambda record: record.index)


class Worker:
    """Claims a job's batches one at a time, validates and processes their records, and
    writes the results, until no batch is left.

    ``processor(record, context)`` gets each record's parsed data (validated by ``schema``,
    a pydantic model class, when given) and a :class:`ProcessingContext`. An exception
    fails the record after ``max_retries`` retries, waiting ``retry_delay_ms * 2**(n-1)``
    before retry n. With ``continue_on_error=False`` the first failed (or invalid) record
    ends its batch as FAILED; its later records stay pending and the job ends FAILED.

    The worker renews its lease from a background thread every ``lease_timeout_ms / 3``;
    batches whose lease is older than ``lease_timeout_ms`` are reclaimed by idle workers.
    ``on_event`` receives :class:`WorkerEvent` s; an exception it raises is logged and
    ignored. ``sleep`` (seconds) replaces the retry waits (processor retries and pauses
    after a store failure), for tests. Settings come from these arguments only, not from
    the job's config; ``store_error_limit`` and ``store_backoff_cap_s`` may be set on a
    subclass or an instance.
    """

    #: Store failures in a row that ``run`` outlives; the next one is raised.
    store_error_limit: int = 10
    #: The longest pause (seconds) before trying again after a store failure.
    store_backoff_cap_s: float = 5.0

    def __init__(
        self,
        store: WorkerStore,
        processor: Processor,
        *,
        worker_id: str | None = None,
        schema: type[pydantic.BaseModel] | None = None,
        continue_on_error: bool = True,
        max_retries: int = 0,
        retry_delay_ms: int = 1000,
        lease_timeout_ms: int = 300_000,
        on_event: EventHandler | None = None,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        missing = [
            name
            for name in ("claim_batch", "get_batch_records", "heartbeat", "complete_batch")
            if not callable(getattr(store, name, None))
        ]
        if missing:
            raise InvalidInputError(f"the store lacks {', '.join(missing)}")
        if not callable(processor):
            raise InvalidInputError(f"processor must be callable, got {processor!r}")
        self.store = store
        self.processor = processor
        self.worker_id = check_worker_id(
            worker_id if worker_id is not None else default_worker_id()
        )
        self.schema = check_schema(schema)
        self.continue_on_error = bool(continue_on_error)
        self.max_retries = _non_negative(max_retries, "max_retries")
        self.retry_delay_ms = _non_negative(retry_delay_ms, "retry_delay_ms")
        self.lease_timeout_ms = _non_negative(lease_timeout_ms, "lease_timeout_ms")
        if self.lease_timeout_ms == 0:
            raise InvalidValueError("lease_timeout_ms must be positive")
        self.on_event = on_event
        self._sleep = sleep
        self._stopping = threading.Event()
        self._total_records: dict[str, int] = {}
        self._leases = _Leases(f"lease-{self.worker_id}")

    # -- public ---------------------------------------------------------------------------

    def run(self, job_id: str) -> WorkerSummary:
        """Process batches of ``job_id`` until none is left, then finalize the job.

        When no batch is PENDING, stale batches (lease older than ``lease_timeout_ms``) are
        reclaimed and processed. While other workers still hold live batches the worker
        waits, polling, so that it can take over a batch whose worker dies; it returns once
        every batch is COMPLETED or FAILED, when the job is not PROCESSING (not prepared
        yet, paused, finished), or after ``stop()``. Raises JobNotFoundError for an unknown
        job. The job is finalized (exactly once, by ``try_finalize_job``) by the first worker
        whose claim finds no batch left once every batch is done, or as a run returns; a job
        whose last worker died in between stays PROCESSING until any worker runs it again.

        A database failure that the store's own retries could not cure (the server gone
        for longer than they last, say) does not end the run: the batch in hand is
        abandoned (released if the database answers, else its lease runs out and another
        worker reclaims it) and the worker tries again after a pause that grows, jittered,
        up to ``store_backoff_cap_s``. After ``store_error_limit`` failures in a row the
        next one is raised; ``WorkerSummary.store_errors`` counts those outlived. Errors
        of the query itself (constraint, syntax, data) are raised at once.
        """
        check_id(job_id, "job id")
        tally = _Tally()
        in_a_row = 0
        try:
            while True:
                try:
                    if self._stopping.is_set() or self._step(job_id, tally):
                        tally.finalized = self._finalize(job_id) or tally.finalized
                        break
                    in_a_row = 0
                except (pw.DatabaseError, pw.InterfaceError) as exc:
                    if not _is_outage(exc):
                        raise
                    tally.store_errors += 1
                    in_a_row += 1
                    if self._stopping.is_set():
                        logger.warning("store call failed while stopping (%s); stopped", exc)
                        break
                    if in_a_row > self.store_error_limit:
                        raise
                    self._pause_after_store_error(exc, in_a_row)
        finally:
            self._stopping.clear()
            self._leases.close()
        return WorkerSummary(
            job_id=job_id,
            worker_id=self.worker_id,
            batches=tally.batches,
            processed=tally.processed,
            failed=tally.failed,
            finalized=tally.finalized,
            retries=tally.retries,
            leases_lost=tally.leases_lost,
            store_errors=tally.store_errors,
        )

    def _step(self, job_id: str, tally: _Tally) -> bool:
        """One round of ``run``: process a batch, or wait for other workers' batches; True
        once the job needs nothing more from this worker."""
        result = self._next(job_id, report=False)
        tally.add(result)
        if result.claimed:
            return False
        if result.reason == ClaimFailureReason.JOB_NOT_PROCESSING:
            return True
        status = self.store.get_distributed_status(job_id)
        if status.pending_batches:
            return False
        if not status.processing_batches:
            return True
        # Other workers hold live batches: wait for them to finish or go stale.
        self._stopping.wait(self._poll_interval_s)
        return False

    def _pause_after_store_error(self, exc: BaseException, in_a_row: int) -> None:
        # Exponential, capped and jittered, so that workers cut off together do not all
        # come back at once; stop() ends the pause early.
        ceiling = min(self.store_backoff_cap_s, 0.1 * 2 ** (in_a_row - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        logger.warning(
            "store call failed (%s: %s); batch in hand abandoned; trying again in %.2f s (%d/%d)",
            type(exc).__name__,
            _first_line(exc),
            delay,
            in_a_row,
            self.store_error_limit,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stopping.wait(delay)

    def process_next(self, job_id: str) -> BatchResult:
        """Claim one batch (reclaiming stale ones when none is PENDING), process it, write
        its results and try to finalize the job. Raises JobNotFoundError for an unknown job.
        """
        try:
            return self._next(job_id, report=True)
        finally:
            self._leases.close()

    def _next(self, job_id: str, *, report: bool) -> BatchResult:
        """``process_next``; with ``report`` False (``run``'s rounds), a written batch is
        not followed by an attempt to finalize and ``job_complete`` is left False: ``run``
        reads the job's state only once no batch is left to claim, so a batch costs no
        reads beyond its own records."""
        claim = self.store.claim_batch(job_id, self.worker_id)
        if (
            claim.reason == ClaimFailureReason.NO_PENDING_BATCHES
            and self.store.reclaim_stale_batches(job_id, self.lease_timeout_ms)
        ):
            claim = self.store.claim_batch(job_id, self.worker_id)
        if claim.reservation is None:
            if claim.reason == ClaimFailureReason.JOB_NOT_FOUND:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            finalized = claim.reason == ClaimFailureReason.NO_PENDING_BATCHES and self._finalize(
                job_id
            )
            return BatchResult(
                claimed=False,
                job_id=job_id,
                job_complete=report and self._job_complete(job_id),
                finalized=finalized,
                reason=claim.reason,
            )
        return self._process_batch(claim.reservation, report)

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in hand (safe from any thread)."""
        self._stopping.set()

    # -- one batch ------------------------------------------------------------------------

    def _process_batch(self, res: BatchReservation, report: bool) -> BatchResult:
        started = time.monotonic()
        self._emit(
            BatchClaimed(
                res.job_id,
                self.worker_id,
                res.batch_id,
                res.batch_index,
                res.record_start_index,
                res.record_end_index,
            )
        )
        lease: _Held | None = None
        written = False
        try:
            try:
                # The store and the interval as they are now: both are public attributes.
                lease = self._leases.hold(res, self.store, self.lease_timeout_ms / 3000)
                work = self._process_records(res, self._read_batch(res), lease.lost)
            finally:
                if lease is not None:
                    self._leases.release(lease)
            if not work.lease_lost:
                status = BatchStatus.COMPLETED if work.failure is None else BatchStatus.FAILED
                written = self._complete(res, status, work)
                work.lease_lost = not written
        finally:
            if not written:
                self._release(res)
        if work.lease_lost:
            logger.warning("lost the lease on batch %s; its results were not written", res.batch_id)
            self._emit(LeaseLost(res.job_id, self.worker_id, res.batch_id, res.batch_index))
            return BatchResult(
                claimed=True,
                job_id=res.job_id,
                batch_id=res.batch_id,
                batch_index=res.batch_index,
                job_complete=report and self._job_complete(res.job_id),
                retries=work.retries,
                lease_lost=True,
            )
        self._emit_batch_done(res, work, _elapsed_ms(started))
        finalized = complete = False
        if report:
            try:
                finalized = self._finalize(res.job_id)
                complete = finalized or self._job_complete(res.job_id)
            except (pw.DatabaseError, pw.InterfaceError) as exc:
                if not _is_outage(exc):
                    raise
                # The batch is written and counts as this worker's; finalizing is left to
                # the next call (or to another worker).
                logger.warning(
                    "batch %s written; the job is not finalized yet: %s", res.batch_id, exc
                )
        return BatchResult(
            claimed=True,
            job_id=res.job_id,
            batch_id=res.batch_id,
            batch_index=res.batch_index,
            processed_count=work.processed,
            failed_count=work.failed,
            job_complete=complete,
            retries=work.retries,
            finalized=finalized,
        )

    def _read_batch(self, res: BatchReservation) -> list[tuple[int, dict[str, Any]]]:
        """The batch's records as (index, raw) pairs: all that processing needs."""
        if isinstance(self.store, RawRecordsReader) and _bulk_path(
            self.store, "get_batch_raw", "get_batch_records"
        ):
            return self.store.get_batch_raw(res.job_id, res.batch_id)
        return [(r.index, r.raw) for r in self.store.get_batch_records(res.job_id, res.batch_id)]

    def _process_records(
        self,
        res: BatchReservation,
        records: list[tuple[int, dict[str, Any]]],
        lease_lost: threading.Event,
    ) -> _BatchWork:
        work = _BatchWork()
        total = self._total(res.job_id)
        for index, raw in records:
            if lease_lost.is_set():
                work.lease_lost = True
                return work
            context = ProcessingContext(
                res.job_id, res.batch_id, res.batch_index, index, total, lease_lost
            )
            result = self._process_record(index, raw, context)
            if result is None:  # the lease was lost while waiting to retry
                work.lease_lost = True
                return work
            if isinstance(result, tuple):
                index, kept, parsed, retries = result
                work.done.append((index, kept, parsed))
                work.done_retries.append(retries)
                work.retries += retries
                work.processed += 1
                continue
            work.records.append(result)
            work.retries += result.retry_count or 0
            work.failed += 1
            self._emit_record_failed(res, result)
            if not self.continue_on_error:
                work.failure = result
                break
        return work

    def _process_record(
        self, index: int, raw: dict[str, Any], context: ProcessingContext
    ) -> _Done | ProcessedRecord | None:
        """Validate and process one record: (index, raw, parsed, retries) once processed, a
        ProcessedRecord if it failed or is invalid, None when the lease is lost mid-retry.

        Every record of the batch is processed, whatever its stored status: results are
        only ever written together with the batch's final state, so a claimed batch holds
        no result that could be kept (at-least-once processing).
        """
        parsed = raw
        if self.schema is not None:
            parsed, errors = validate_record(self.schema, raw)
            if errors:
                return ProcessedRecord(
                    index=index,
                    raw=raw,
                    parsed=parsed,
                    status=RecordStatus.INVALID,
                    errors=errors,
                )
        attempt = 0
        while True:
            try:
                self.processor(parsed, context)
            except Exception as exc:
                if attempt >= self.max_retries:
                    return ProcessedRecord(
                        index=index,
                        raw=raw,
                        parsed=parsed,
                        status=RecordStatus.FAILED,
                        processing_error=utf8_text(str(exc) or type(exc).__name__),
                        retry_count=attempt,
                    )
                attempt += 1
                logger.debug("record %d failed (%s); retry %d", index, exc, attempt)
                self._wait(self.retry_delay_ms * 2 ** (attempt - 1) / 1000, context.lease_lost)
                if context.lease_lost.is_set():
                    return None
                continue
            # Without validation (it took a tenth of a worker's time): every value comes
            # from a validated record or from the schema's JSON-mode dump (a dict: checked
            # by validate_record). raw is copied, as validation did, so a processor that
            # keeps the dict and changes it later cannot change what is stored.
            kept = dict(raw)
            return index, kept, kept if parsed is raw else parsed, attempt

    def _complete(self, res: BatchReservation, status: BatchStatus, work: _BatchWork) -> bool:
        if isinstance(self.store, ProcessedRecordsWriter) and _bulk_path(
            self.store, "complete_batch_processed", "complete_batch"
        ):
            # No ProcessedRecord per processed record: building them cost a tenth of the
            # worker's time.
            return self.store.complete_batch_processed(
                res,
                status=status,
                processed_count=work.processed,
                failed_count=work.failed,
                processed=work.done,
                records=work.records,
            )
        return self.store.complete_batch(
            res,
            status=status,
            processed_count=work.processed,
            failed_count=work.failed,
            records=work.all_records(),
        )

    def _wait(self, seconds: float, lease_lost: threading.Event) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        else:
            lease_lost.wait(seconds)  # wakes early when the lease is lost

    def _release(self, res: BatchReservation) -> None:
        # Hand the batch back at once (an exception escaped, or the write was refused);
        # acts only while this worker still holds it.
        try:
            self.store.release_batch(res.job_id, res.batch_id, self.worker_id)
        except Exception:
            logger.exception("could not release batch %s", res.batch_id)

    # -- job level ------------------------------------------------------------------------

    def _total(self, job_id: str) -> int:
        total = self._total_records.get(job_id)
        if total is None:
            job = self.store.get_job_state(job_id)
            if job is None:
                raise JobNotFoundError(f"job {job_id!r} does not exist")
            total = self._total_records[job_id] = job.total_records
        return total

    def _job_complete(self, job_id: str) -> bool:
        status = self.store.get_distributed_status(job_id)
        if status.total_batches:
            return status.is_complete
        job = self.store.get_job_state(job_id)  # no batches: an empty source
        return job is not None and job.status == JobStatus.COMPLETED

    def _finalize(self, job_id: str) -> bool:
        if not self.store.try_finalize_job(job_id):
            return False
        logger.info("worker %s finalized job %s", self.worker_id, job_id)
        if self.on_event is not None:
            try:
                job = self.store.get_job_state(job_id)
                progress = self.store.get_progress(job_id)
            except Exception:
                logger.exception("job %s finalized, but its summary could not be read", job_id)
            else:
                self._emit(
                    JobCompleted(
                        job_id,
                        self.worker_id,
                        job.status if job is not None else JobStatus.COMPLETED,
                        progress.total_records,
                        progress.processed_records,
                        progress.failed_records,
                        progress.elapsed_ms,
                    )
                )
        return True

    # -- events ---------------------------------------------------------------------------

    def _emit(self, event: WorkerEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("on_event raised for %s; ignored", type(event).__name__)

    def _emit_record_failed(self, res: BatchReservation, record: ProcessedRecord) -> None:
        if self.on_event is None:
            return
        self._emit(
            RecordFailed(
                res.job_id,
                self.worker_id,
                res.batch_id,
                res.batch_index,
                record.index,
                record.status,
                _record_error(record),
                record.retry_count or 0,
            )
        )

    def _emit_batch_done(self, res: BatchReservation, work: _BatchWork, elapsed_ms: int) -> None:
        if work.failure is None:
            self._emit(
                BatchCompleted(
                    res.job_id,
                    self.worker_id,
                    res.batch_id,
                    res.batch_index,
                    work.processed,
                    work.failed,
                    work.retries,
                    elapsed_ms,
                )
            )
            return
        self._emit(
            BatchFailed(
                res.job_id,
                self.worker_id,
                res.batch_id,
                res.batch_index,
                work.processed,
                work.failed,
                work.retries,
                elapsed_ms,
                work.failure.index,
                _record_error(work.failure),
            )
        )

    @property
    def _poll_interval_s(self) -> float:
        # Often enough to take over a dead worker's batch soon after its lease ends.
        # Also what an idle worker waits at the end of a job: 0.2 s at most.
        return min(0.2, max(0.05, self.lease_timeout_ms / 10_000))


def _non_negative(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValueError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _record_error(record: ProcessedRecord) -> str:
    """A failed record's processing error, or its validation errors in one line."""
    if record.processing_error is not None:
        return record.processing_error
    return "; ".join(f"{e.field}: {e.message}" if e.field else e.message for e in record.errors)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


__all__ = [
    "BatchClaimed",
    "BatchCompleted",
    "BatchFailed",
    "BatchResult",
    "JobCompleted",
    "LeaseLost",
    "PrepareResult",
    "ProcessingContext",
    "Processor",
    "RecordFailed",
    "Worker",
    "WorkerEvent",
    "WorkerStore",
    "WorkerSummary",
    "default_worker_id",
    "prepare_job",
]
