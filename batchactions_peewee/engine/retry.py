"""prepare_retry_job: a new job from the raw data of another job's failed (or invalid)
records, and preview_records: a schema tried on records without writing anything."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import pydantic

from ..checks import check_count, check_id, status_of
from ..errors import InvalidInputError, JobNotFoundError
from ..model import (
    FAILED_RECORD_STATUSES,
    PENDING_RECORD_STATUSES,
    ProcessedRecord,
    RecordStatus,
    ValidationError,
)
from ..ports import DistributedStateStore
from .prepare import PrepareResult, prepare_job
from .validation import check_schema, validate_record

_PAGE = 1000


def prepare_retry_job(
    store: DistributedStateStore,
    job_id: str,
    *,
    statuses: Iterable[RecordStatus | str] = (RecordStatus.FAILED,),
    batch_size: int | None = None,
) -> PrepareResult:
    """A new job whose records are the raw data of ``job_id``'s records in ``statuses``
    (by default the failed ones; ``RecordStatus.INVALID`` for those that failed
    validation), in index order. The original job is left unchanged; the new job keeps
    its config (schema included), its batch size unless ``batch_size`` is given, and
    names its origin in the config (``retryOf``, ``retryStatuses``)."""
    check_id(job_id, "job id")
    wanted = sorted({status_of(RecordStatus, s).value for s in statuses})
    if not wanted:
        raise InvalidInputError("statuses must name at least one record status")
    job = store.get_job_state(job_id)
    if job is None:
        raise JobNotFoundError(f"job {job_id!r} does not exist")
    config = job.config.model_dump(by_alias=True, exclude_none=True)
    config.update(retryOf=job_id, retryStatuses=wanted)
    size = job.config.batch_size if batch_size is None else check_count(batch_size, "batch_size")
    raws = (record.raw for record in _records(store, job_id, set(wanted)))
    return prepare_job(store, raws, batch_size=size, config=config)


def _records(
    store: DistributedStateStore, job_id: str, wanted: set[str]
) -> Iterator[ProcessedRecord]:
    """The job's records in ``wanted``, by index; a page at a time where the store can."""
    page = getattr(store, "get_failed_records_page", None)
    if wanted <= set(FAILED_RECORD_STATUSES) and callable(page):
        after = -1
        while True:
            records: list[ProcessedRecord] = page(job_id, after_index=after, limit=_PAGE)
            yield from (r for r in records if r.status.value in wanted)
            if len(records) < _PAGE:
                return
            after = records[-1].index
    found: list[ProcessedRecord] = []
    if wanted & set(FAILED_RECORD_STATUSES):
        found += store.get_failed_records(job_id)
    if wanted & set(PENDING_RECORD_STATUSES):
        found += store.get_pending_records(job_id)
    if RecordStatus.PROCESSED.value in wanted:
        found += store.get_processed_records(job_id)
    yield from sorted((r for r in found if r.status.value in wanted), key=lambda r: r.index)


@dataclass(frozen=True, slots=True)
class PreviewResult:
    """What ``preview_records`` found: how many records it read, how many fit the schema
    and how many did not, and every error as (record index, ValidationError)."""

    total: int
    valid: int
    invalid: int
    errors: list[tuple[int, ValidationError]] = field(default_factory=list)


def preview_records(
    records: Iterable[Mapping[str, Any]],
    *,
    schema: type[pydantic.BaseModel],
    limit: int = 1000,
) -> PreviewResult:
    """Validate the first ``limit`` records against ``schema`` (a pydantic model class), as
    a worker would, and write nothing anywhere."""
    model = check_schema(schema)
    if model is None:
        raise InvalidInputError("preview_records needs a schema")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer, got {limit!r}")
    total = valid = 0
    errors: list[tuple[int, ValidationError]] = []
    for index, record in enumerate(islice(records, limit)):
        if not isinstance(record, Mapping):
            raise InvalidInputError(f"record {index} is a {type(record).__name__}, not a dict")
        total += 1
        _, problems = validate_record(model, dict(record))
        if problems:
            errors += [(index, problem) for problem in problems]
        else:
            valid += 1
    return PreviewResult(total=total, valid=valid, invalid=total - valid, errors=errors)
