"""Records as the tables hold them: rows of JSON text, built and read back the same way by
both stores, so both accept and refuse exactly the same input and read back exactly the
same values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

from . import codec
from .checks import (
    MAX_INT,
    check_completion_counts,
    check_count,
    check_final_status,
    check_id,
    check_job,
    check_text,
    check_unique,
    check_worker_id,
    status_of,
)
from .errors import InvalidInputError
from .model import (
    Batch,
    BatchReservation,
    BatchStatus,
    JobState,
    Processed,
    ProcessedRecord,
    RecordStatus,
    trusted_record,
)

#: A record row: (jobId, batchId, recordIndex, status, raw, parsed, errors, processingError).
RecordRow = tuple[str, str, int, str, str, str, str, "str | None"]


def _record_row(
    job_id: str, batch_id: str, record: ProcessedRecord, index: int, raw: str
) -> RecordRow:
    """One record as a row, its JSON columns encoded by the codec; ``index`` is
    ``record.index``, checked by ``record_rows``, and ``raw`` its raw form's JSON text."""
    parsed = _parsed_text(record.parsed, record.raw, raw, index)
    errors = (
        codec.dumps([e.to_json_dict() for e in record.errors], what="errors", record=index)
        if record.errors
        else "[]"
    )
    status = record.status
    error = record.processing_error
    if error is not None:
        check_text(error, f"processing error of record {index}")
    return (
        job_id,
        batch_id,
        index,
        status._value_ if type(status) is RecordStatus else status_of(RecordStatus, status).value,
        raw,
        parsed,
        errors,
        error,
    )


def record_rows(job_id: str, batch_id: str, records: Iterable[ProcessedRecord]) -> list[RecordRow]:
    """Rows for one bulk write; a record index may appear only once."""
    check_id(job_id, "job id")
    check_id(batch_id, "batch id")
    records = list(records)
    if len(records) == 1:  # save_processed_record's write: no repeats to look for
        (record,) = records
        index = check_count(record.index, "record index")
        raw = codec.dumps(record.raw, what="raw", record=index)
        return [_record_row(job_id, batch_id, record, index, raw)]
    indexes = [check_count(record.index, "record index") for record in records]
    check_unique(indexes)
    raws = codec.dumps_each([record.raw for record in records], what="raw", records=indexes)
    return [
        _record_row(job_id, batch_id, record, index, raw)
        for record, index, raw in zip(records, indexes, raws, strict=True)
    ]


def _parsed_text(parsed: Any, raw: Any, raw_text: str, index: int) -> str:
    """A record's parsed form as JSON text, given its raw form and that form's text: most
    records keep their raw form as parsed, whose JSON is then encoded and checked once."""
    if codec.encodes_like(parsed, raw, raw_text):
        return raw_text
    return codec.dumps(parsed, what="parsed", record=index)


def processed_rows(job_id: str, batch_id: str, processed: Iterable[Processed]) -> list[RecordRow]:
    """Rows for records processed without error, given as (index, raw, parsed): the rows
    ``record_rows`` would make of ProcessedRecords with status processed and no errors, with
    the same checks, without building a model per record (a worker's completion path)."""
    check_id(job_id, "job id")
    check_id(batch_id, "batch id")
    processed = list(processed)
    columns = _processed_columns(processed)
    if columns is None:
        processed = [_processed_item(k, item) for k, item in enumerate(processed)]
        indexes = [check_count(index, "record index") for index, _, _ in processed]
        raws = [raw for _, raw, _ in processed]
        parseds = [parsed for _, _, parsed in processed]
    else:
        indexes, raws, parseds = columns
    check_unique(indexes)
    texts = codec.dumps_each(raws, what="raw", records=indexes)
    done = RecordStatus.PROCESSED.value
    return [
        (
            job_id,
            batch_id,
            index,
            done,
            text,
            text if parsed is raw else _parsed_text(parsed, raw, text, index),
            "[]",
            None,
        )
        for index, raw, parsed, text in zip(indexes, raws, parseds, texts, strict=True)
    ]


def _processed_columns(
    processed: list[Any],
) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]]] | None:
    """The indexes, raw and parsed forms of ``processed`` as three lists, when every item
    is an (index, raw, parsed) tuple of an int in its column's range and two plain dicts:
    the worker's completion, checked by type sets, not a Python call per item. None when
    one is not, for ``_processed_item`` to check item by item."""
    if not processed:
        return [], [], []
    if set(map(type, processed)) != {tuple}:
        return None
    try:
        indexes, raws, parseds = (list(column) for column in zip(*processed, strict=True))
    except ValueError:  # an item of another length
        return None
    if (
        set(map(type, indexes)) != {int}
        or set(map(type, raws)) != {dict}
        or set(map(type, parseds)) != {dict}
        or min(indexes) < 0
        or max(indexes) > MAX_INT
    ):
        return None
    return indexes, raws, parseds


def _processed_item(k: int, item: object) -> Processed:
    """Item ``k`` of a completion's ``processed`` as (index, raw, parsed), its forms plain
    dicts (as ProcessedRecord validation makes them), or InvalidInputError."""
    if not isinstance(item, (tuple, list)) or len(item) != 3:
        raise InvalidInputError(
            f"processed item {k} must be (index, raw, parsed), got {item!r:.80}"
        )
    index, raw, parsed = item
    if not isinstance(raw, dict) or not isinstance(parsed, dict):
        raise InvalidInputError(f"record {index}: raw and parsed forms must be dicts")
    plain_raw = raw if type(raw) is dict else dict(raw)
    if parsed is raw:  # one copy serves both, so parsed-is-raw is still seen by identity
        return index, plain_raw, plain_raw
    return index, plain_raw, parsed if type(parsed) is dict else dict(parsed)


def pending_rows(
    job_id: str, batch_id: str, first_index: int, records: Iterable[Mapping[str, Any]]
) -> list[RecordRow]:
    """Rows for source records not processed yet: indexes from ``first_index`` on, status
    pending, the dict as both raw and parsed form. ``prepare_job``'s bulk path: the rows
    ``record_rows`` would make of the same ProcessedRecords, with the same checks, without
    building a model per record (most of prepare's own time)."""
    check_id(job_id, "job id")
    check_id(batch_id, "batch id")
    if not isinstance(records, Sequence):
        records = list(records)
    check_count(first_index, "record index")
    check_count(first_index + max(0, len(records) - 1), "record index")
    values: list[dict[str, Any]] = []
    for index, record in enumerate(records, first_index):
        if type(record) is not dict:
            if not isinstance(record, Mapping):
                raise InvalidInputError(f"record {index} is a {type(record).__name__}, not a dict")
            record = dict(record)
        values.append(record)
    texts = codec.dumps_each(
        values, what="raw", records=range(first_index, first_index + len(values))
    )
    pending = RecordStatus.PENDING.value
    return [
        (job_id, batch_id, index, pending, text, text, "[]", None)
        for index, text in enumerate(texts, first_index)
    ]


_RECORD_STATUS_OF_TEXT = {member.value: member for member in RecordStatus}


def record_from_row(row: tuple[Any, ...]) -> ProcessedRecord:
    """A record from (recordIndex, status, raw, parsed, errors, processingError)."""
    index, status, raw, parsed, errors, processing_error = row
    raw_value, parsed_value = codec.loads(raw), codec.loads(parsed)
    no_errors = errors is None or errors == "[]"
    member = _RECORD_STATUS_OF_TEXT.get(status) if type(status) is str else None
    if (
        no_errors
        and member is not None
        and type(raw_value) is dict
        and type(parsed_value) is dict
        and (processing_error is None or type(processing_error) is str)
    ):
        # Every value has its field's type (JSON object keys are strings): validation
        # would only copy the dicts.
        return trusted_record(int(index), raw_value, parsed_value, member, processing_error)
    return ProcessedRecord(
        index=int(index),
        status=status,
        raw=raw_value,
        parsed=parsed_value,
        errors=[] if no_errors else codec.loads(errors),
        processing_error=processing_error,
    )


def raw_from_row(index: Any, raw: Any) -> tuple[int, dict[str, Any]]:
    """A record's (index, raw) from its recordIndex and raw columns: what ``record_from_row``
    gives of them, refusing what it refuses (a raw form that is no JSON object)."""
    value = codec.loads(raw)
    if type(value) is not dict:
        # Validated as record_from_row does, so a bad row fails in the same way.
        value = ProcessedRecord(
            index=int(index), status=RecordStatus.PENDING, raw=value, parsed={}
        ).raw
    return int(index), value


def raws_from_rows(
    rows: list[tuple[Any, Any]],
) -> tuple[list[tuple[int, dict[str, Any]]], dict[int, str]]:
    """(recordIndex, raw) rows as ``raw_from_row`` reads them, by record index, and the raw
    texts as stored, by index: none when the column does not read as text (PostgreSQL's
    jsonb reads as values)."""
    if all(type(index) is int and type(raw) is str for index, raw in rows):
        rows = sorted(rows, key=itemgetter(0))
        texts = [raw for _, raw in rows]
        values = codec.loads_objects(texts)
        if values is not None:  # the usual case: one parse per text, no call per row
            indexes = [index for index, _ in rows]
            return list(zip(indexes, values, strict=True)), dict(zip(indexes, texts, strict=True))
    found = sorted((raw_from_row(index, raw) for index, raw in rows), key=itemgetter(0))
    return found, {int(index): raw for index, raw in rows if type(raw) is str}


def batch_json(batch: Batch) -> dict[str, Any]:
    """A batch as the job row's JSON list holds it: without its records (they have a table)."""
    return batch.model_copy(update={"records": []}).to_json_dict()


def job_texts(job: JobState) -> tuple[str, str]:
    """Check a job before it is written; return its (config, batches) JSON text."""
    check_job(job)
    config = codec.dumps(job.config.to_json_dict(), what="job config")
    batches = codec.dumps([batch_json(b) for b in job.batches], what="job batches")
    return config, batches


def set_batch_in_list(
    batches: list[dict[str, Any]], batch_id: str, status: str, processed: int, failed: int
) -> bool:
    """Set one batch's status and counts in a job row's JSON list; False if it is not there."""
    for batch in batches:
        if batch.get("id") == batch_id:
            batch.update(status=status, processedCount=processed, failedCount=failed)
            return True
    return False


def completion_rows(
    reservation: BatchReservation,
    status: BatchStatus | str,
    processed: int,
    failed: int,
    records: Iterable[ProcessedRecord],
    done: Iterable[Processed] = (),
) -> tuple[BatchStatus, list[RecordRow]]:
    """Everything ``complete_batch`` checks before it writes: a final status, counts that
    fit, ids that fit, and records whose counts agree. ``done`` holds further records,
    processed without error, as (index, raw, parsed). Returns the status and the rows, by
    record index."""
    final = check_final_status(status)
    check_count(processed, "processed_count")
    check_count(failed, "failed_count")
    check_worker_id(reservation.worker_id)
    rows = record_rows(reservation.job_id, reservation.batch_id, records)
    done_rows = processed_rows(reservation.job_id, reservation.batch_id, done)
    if done_rows:
        if rows:
            rows = sorted(chain(done_rows, rows), key=itemgetter(2))
            check_unique([row[2] for row in rows])
        else:
            rows = done_rows
    check_completion_counts(reservation, {row[2]: row[3] for row in rows}, processed, failed)
    return final, rows
