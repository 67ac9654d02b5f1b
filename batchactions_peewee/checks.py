"""The input checks both stores share: bad input is refused here, before anything is written.

Every check raises an :class:`~batchactions_peewee.errors.InvalidInputError` subclass that
names the value at fault, and never truncates or coerces the caller's data.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable
from typing import TypeVar

from .errors import (
    DuplicateRecordError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidStatusError,
    InvalidTablePrefixError,
    InvalidValueError,
)
from .model import (
    FAILED_RECORD_STATUSES,
    BatchReservation,
    BatchStatus,
    JobState,
    JobStatus,
    RecordStatus,
)

E = TypeVar("E", bound=enum.Enum)

MAX_ID_LENGTH = 36
MAX_WORKER_ID_LENGTH = 128
#: INTEGER columns (indexes, counts, totalRecords) are 32-bit on MySQL and PostgreSQL.
MAX_INT = 2**31 - 1
#: BIGINT columns (epoch-ms timestamps).
MAX_BIGINT = 2**63 - 1
#: ``processingError`` is TEXT: 65,535 bytes on MySQL, the smallest of the three.
MAX_TEXT_BYTES = 65_535
# MySQL caps identifiers at 64 characters; the longest name we build is the prefix plus
# "records_job_id_record_index" (27).
MAX_PREFIX_LENGTH = 64 - 27
_PREFIX = re.compile(r"[A-Za-z0-9_]*\Z")


def check_id(value: object, what: str, max_length: int = MAX_ID_LENGTH) -> str:
    """An id must be a non-empty string that fits its column and that every database can hold."""
    if not isinstance(value, str) or not value:
        raise InvalidIdentifierError(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise InvalidIdentifierError(
            f"{what} is {len(value)} characters long; at most {max_length} fit: {value[:40]!r}..."
        )
    problem = _text_problem(value)
    if problem:
        raise InvalidIdentifierError(f"{what} {problem}: {value!r}")
    return value


def _text_problem(value: str, max_bytes: int | None = None) -> str | None:
    # PostgreSQL text cannot hold NUL; UTF-8 cannot hold lone surrogates.
    if "\x00" in value:
        return "holds a NUL character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "holds a lone surrogate"
    if max_bytes is not None and size > max_bytes:
        return f"is {size:,} bytes of UTF-8; at most {max_bytes:,} fit its column"
    return None


def check_worker_id(value: object) -> str:
    """A worker id must be a non-empty string of at most 128 characters."""
    return check_id(value, "worker id", MAX_WORKER_ID_LENGTH)


def check_count(value: object, what: str, maximum: int = MAX_INT) -> int:
    """Counts and indexes are non-negative integers that fit their (32-bit) column."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidValueError(
            f"{what} must be an integer from 0 to {maximum:,} (its column's range), got {value!r}"
        )
    return value


def check_timestamp(value: int | None, what: str) -> int | None:
    """Epoch-ms timestamps must fit a BIGINT column."""
    if value is not None and not -MAX_BIGINT - 1 <= value <= MAX_BIGINT:
        raise InvalidValueError(f"{what} does not fit a 64-bit integer: {value!r}")
    return value


def check_text(value: str | None, what: str) -> str | None:
    """Free text must be UTF-8 (no lone surrogates), hold no NUL and fit a TEXT column."""
    if value is not None:
        problem = _text_problem(value, MAX_TEXT_BYTES)
        if problem:
            raise InvalidValueError(f"{what} {problem}")
    return value


def storable_text(text: str) -> str:
    """Our own message text made storable: lone surrogates and NUL become U+FFFD and text
    over ``MAX_TEXT_BYTES`` is cut, saying so. Never used on the caller's data."""
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    data = text.encode("utf-8")
    if len(data) <= MAX_TEXT_BYTES:
        return text
    marker = f" [... cut: the message was {len(data):,} bytes]"
    head = data[: MAX_TEXT_BYTES - len(marker.encode("utf-8"))].decode("utf-8", "ignore")
    return head + marker


def check_table_prefix(prefix: object) -> str:
    """A table prefix may hold ASCII letters, digits and underscores only."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        raise InvalidTablePrefixError(
            f"table_prefix may hold ASCII letters, digits and underscores only, got {prefix!r}"
        )
    if len(prefix) > MAX_PREFIX_LENGTH:
        raise InvalidTablePrefixError(
            f"table_prefix is {len(prefix)} characters long; at most {MAX_PREFIX_LENGTH} fit"
        )
    return prefix


def status_of(kind: type[E], value: object) -> E:
    """``value`` as a member of the status enum ``kind``, or InvalidStatusError."""
    if type(value) is kind:
        return value  # a member already (pydantic made it)
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(str(m.value) for m in kind)
        raise InvalidStatusError(f"unknown {kind.__name__} {value!r}; known: {known}") from None


def parse_job_status(status: JobStatus | str) -> JobStatus:
    """A JobStatus from its value, or InvalidStatusError."""
    return status_of(JobStatus, status)


def check_unique(indexes: list[int]) -> None:
    """A record index may appear only once in one bulk write."""
    if len(set(indexes)) != len(indexes):
        seen: set[int] = set()
        for index in indexes:
            if index in seen:
                raise DuplicateRecordError(f"record index {index} appears twice in one write")
            seen.add(index)


def check_job(job: JobState) -> None:
    """Everything a job must satisfy before it is written."""
    check_id(job.id, "job id")
    status_of(JobStatus, job.status)
    check_count(job.total_records, "total_records")
    check_timestamp(job.started_at, "started_at")
    check_timestamp(job.completed_at, "completed_at")
    for batch in job.batches:
        check_id(batch.id, "batch id")
        check_timestamp(batch.claimed_at, "claimed_at")
        for count in ("processed_count", "failed_count", "record_start_index", "record_end_index"):
            value = getattr(batch, count)
            if value is not None:
                check_count(value, count)
        status_of(BatchStatus, batch.status)
        check_count(batch.index, "batch index")
        if batch.worker_id is not None:
            check_worker_id(batch.worker_id)


#: What ``purge_jobs`` deletes unless told otherwise.
PURGEABLE = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED)


def check_purge(older_than_ms: object, statuses: Iterable[JobStatus | str]) -> list[str]:
    """``purge_jobs``' arguments: an age that fits, and statuses a purge may take (never
    PROCESSING or PAUSED: their workers may be running). Returns the statuses' values."""
    check_count(older_than_ms, "older_than_ms", MAX_BIGINT // 2)
    wanted = sorted({status_of(JobStatus, s).value for s in statuses})
    if not wanted:
        raise InvalidInputError("statuses must name at least one job status")
    running = [s for s in wanted if s in (JobStatus.PROCESSING.value, JobStatus.PAUSED.value)]
    if running:
        raise InvalidInputError(
            f"purge_jobs never deletes {' or '.join(running)} jobs: their workers may be "
            "running (abort them first)"
        )
    return wanted


def check_final_status(status: BatchStatus | str) -> BatchStatus:
    """A batch completes as COMPLETED or FAILED."""
    final = status_of(BatchStatus, status)
    if final not in (BatchStatus.COMPLETED, BatchStatus.FAILED):
        raise InvalidStatusError(f"a batch completes as COMPLETED or FAILED, not {final.value}")
    return final


def check_completion_counts(
    reservation: BatchReservation,
    statuses: dict[int, str],
    processed: int,
    failed: int,
) -> None:
    """When a completion carries every record of its batch (``statuses``: record index to
    status), its counts must be theirs: a distributed job's progress sums the batches'
    counters, which must then agree with ``get_processed_records`` and friends."""
    wanted = range(reservation.record_start_index, reservation.record_end_index + 1)
    if not wanted or len(statuses) < len(wanted) or not statuses.keys() >= set(wanted):
        return
    if len(statuses) == len(wanted):  # the usual case: exactly the batch's records
        tally = Counter(statuses.values())
    else:
        tally = Counter(statuses[i] for i in wanted)
    actual = (
        tally[RecordStatus.PROCESSED.value],
        sum(tally[status] for status in FAILED_RECORD_STATUSES),
    )
    if actual != (processed, failed):
        raise InvalidInputError(
            f"batch {reservation.batch_id!r}: processed_count={processed}, "
            f"failed_count={failed}, but its records say {actual[0]} processed and "
            f"{actual[1]} failed or invalid"
        )
