"""prepare_job: stream a source of dicts into a distributed job that workers can share.

One batch is held at a time and written with one bulk insert, so memory stays flat
whatever the source's size.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from ..checks import check_id
from ..errors import InvalidInputError, InvalidValueError, JobAbortedError, JobExistsError
from ..logfields import log_fields
from ..model import Batch, BatchStatus, JobConfig, JobState, JobStatus
from ..ports import DistributedStateStore, WorkerIO
from .io import worker_io
from .validation import check_schema

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """What ``prepare_job`` wrote: the job id, its record count and its batch count."""

    job_id: str
    total_records: int
    total_batches: int


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
    (JOB_NOT_PROCESSING). A job aborted (or deleted) while it is being written raises
    ``JobAbortedError`` and stays as the abort left it. Bad input (a record that is not a
    dict, a value with no JSON form) raises the store's error (``InvalidInputError`` /
    ``InvalidValueError``); the partly written job is then deleted when the store can
    (``delete_job``). Two concurrent
    calls with the same explicit ``job_id`` are not detected reliably: don't make them.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    job_id = check_id(job_id if job_id is not None else str(uuid.uuid4()), "job id")
    job_config = _job_config(config, batch_size, check_schema(schema))
    if store.get_job_state(job_id) is not None:
        raise JobExistsError(f"job {job_id!r} already exists")
    # started_at: when preparation began, so that a job left CREATED by a killed prepare
    # has an age (purge_jobs); the final write sets it to when the job became PROCESSING.
    created = JobState(
        id=job_id, config=job_config, status=JobStatus.CREATED, started_at=_now(store)
    )
    store.save_job_state(created)
    io = worker_io(store)
    try:
        batches, total = _write_batches(io, job_id, records, batch_size)
        now = _now(store)
        # Only this write makes the job claimable, and it carries every batch. It is
        # conditional on the job being CREATED still: an abort while we wrote stays final.
        activated = io._activate_job(
            JobState(
                id=job_id,
                config=job_config,
                status=JobStatus.PROCESSING if batches else JobStatus.COMPLETED,
                batches=batches,
                total_records=total,
                started_at=now,
                completed_at=None if batches else now,
                distributed=True,
            )
        )
    except _Moved:
        activated = False
    except BaseException:
        _discard(store, job_id)
        raise
    if not activated:
        status = io._job_status(job_id)
        if status is None:
            _discard(store, job_id)  # deleted meanwhile: its records go too
        raise JobAbortedError(
            f"job {job_id!r} was {'deleted' if status is None else status.value.lower()} "
            "while it was being prepared"
        )
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


class _Moved(Exception):
    """The job left CREATED while it was being written (see ``_CHECK_EVERY``)."""


#: Batches written between two looks at the job's status, so that an abort stops a long
#: preparation early; the final write decides in any case.
_CHECK_EVERY = 50


def _write_batches(
    io: WorkerIO,
    job_id: str,
    records: Iterable[Mapping[str, Any]],
    batch_size: int,
) -> tuple[list[Batch], int]:
    batches: list[Batch] = []
    chunk: list[dict[str, Any]] = []
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
        io._save_pending_records(job_id, batch.id, first, chunk)
        batches.append(batch)
        chunk.clear()
        if len(batches) % _CHECK_EVERY == 0 and io._job_status(job_id) != JobStatus.CREATED:
            raise _Moved

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


def _discard(store: DistributedStateStore, job_id: str) -> None:
    delete = getattr(store, "delete_job", None)
    if delete is None:
        return
    try:
        delete(job_id)
    except Exception:
        logger.exception(
            "could not delete the partly prepared job %s", job_id, extra=log_fields(job_id)
        )


def _now(store: object) -> int:
    """The store's clock (both stores have ``now()``), else this machine's, in epoch ms."""
    now = getattr(store, "now", None)
    return int(now()) if callable(now) else int(time.time() * 1000)
