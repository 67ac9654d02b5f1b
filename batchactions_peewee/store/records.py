"""Records: the bulk upsert keyed by (job, record index) and the reads by batch or status."""

from __future__ import annotations

import base64
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any

import peewee as pw
from pydantic_core import to_json

from ..model import FAILED_RECORD_STATUSES, ProcessedRecord
from ..rows import RecordRow, raws_from_rows, record_from_row
from .session import WEIGH_BYTES, Session, StaleStatement
from .tables import Tables

#: From this many rows on, MariaDB's records upsert sends one JSON document (JSON_TABLE).
JSON_TABLE_MIN_ROWS = 16
#: Keep each bulk statement well inside MySQL's max_allowed_packet.
CHUNK_BYTES = 4 * 1024 * 1024
_RECORD_COLUMNS = 8  # the length of a RecordRow
#: Indexes left out of one set-based completion UPDATE (``NOT IN``) before a new one starts.
MAX_SKIPPED = 32
#: Batches whose raw texts a store remembers between the read and the completion.
MAX_REMEMBERED = 64
_PROCESSED = "processed"
#: PostgreSQL's joined column form (``_joined_params``): ASCII unit and record separators.
_SEPARATOR, _NULL = "\x1f", "\x1e"
_SPLIT = "string_to_array(%s, chr(31), chr(30))"


class Records:
    """The records table of one store."""

    def __init__(self, session: Session, tables: Tables) -> None:
        self.session = session
        self.tables = tables
        self._upsert_sql: dict[int, str] = {}  # by row count
        self._unnest_sql: dict[bool, str] = {}  # by joined; built from the column types
        self._json_sql: str | None = None
        self._processed_sql: dict[int, str] = {}  # by indexes left out
        # (job, batch) -> {record index: raw text as read}, for the set-based completion.
        self._read: OrderedDict[tuple[str, str], dict[int, str]] = OrderedDict()
        self._read_lock = threading.Lock()
        R = tables.records
        # Rendered once: only the parameters differ between calls.
        self._raw_sql: str = (
            R.select(R.record_index, R.raw).where(R.job_id == "", R.batch_id == "").sql()[0]
        )

    def forget_statements(self) -> None:
        """Drop statements built from the table's column types (the table may change)."""
        self._unnest_sql = {}

    # -- writes ---------------------------------------------------------------------------

    def upsert(self, rows: Sequence[RecordRow]) -> None:
        """Insert or replace records keyed by (job, record index): idempotent, so re-runnable.

        One multi-row INSERT per chunk (the fastest portable form), its SQL built by Peewee
        once per chunk length and reused; on PostgreSQL, from the dialect's threshold on,
        one row of column arrays instead (see ``_unnest``); on MariaDB from 10.6, from
        ``JSON_TABLE_MIN_ROWS`` on, one JSON document (see ``_json_table_statement``).
        """
        dialect = self.session.dialect
        threshold = dialect.unnest_min_rows
        if threshold is not None and len(rows) >= threshold:
            for chunk in self._chunks(rows, 1):
                self._unnest(chunk)
            return
        database = self.session.database
        weigh = dialect.packet_limited
        by_json = len(rows) >= JSON_TABLE_MIN_ROWS and dialect.json_table_rows()
        for chunk in self._chunks(rows, 1 if by_json else _RECORD_COLUMNS):
            # A chunk whose texts alone reach WEIGH_BYTES makes a larger document: not built.
            small = by_json and len(chunk) > 1 and _records_bytes(chunk) < WEIGH_BYTES
            document = _json_rows(chunk) if small else None
            if document is not None and len(document) < WEIGH_BYTES:
                # Large statements, which a server's limit may refuse, keep the VALUES list:
                # base64 makes the document the larger of the two.
                self.session.check_size(len(document), len(chunk))
                database.execute_sql(self._json_table_statement(), (document,))  # type: ignore[no-untyped-call]
                continue
            if weigh:
                self.session.check_size(_statement_bytes(chunk), len(chunk))
            params = list(chain.from_iterable(chunk))
            database.execute_sql(self._values_sql(len(chunk)), params)  # type: ignore[no-untyped-call]

    def complete(self, job_id: str, batch_id: str, rows: Sequence[RecordRow]) -> None:
        """A fenced completion's records (inside its transaction): ``upsert``'s result, in
        fewer and smaller statements.

        A record processed without error whose raw text is the one this store read for the
        batch, and whose parsed text equals it, needs only its status set and its raw text
        copied into parsed on the server: one UPDATE per range of such records (``kept``).
        The others are upserted. Rows as ``upsert`` would leave them, byte for byte: an
        UPDATE whose row count is not the number of records it means (a row moved, changed
        by someone else, or already in that state on MySQL, which counts changed rows) is
        followed by the full upsert of every row.
        """
        read = self._read.get((job_id, batch_id))
        kept, rest = _kept_rows(rows, read) if read else ((), rows)
        if kept and not self._mark_processed(job_id, batch_id, kept):
            rest = rows
        if rest:
            self.upsert(rest)

    def _mark_processed(self, job_id: str, batch_id: str, kept: Sequence[int]) -> bool:
        """Set the records ``kept`` (ascending indexes) processed with parsed = raw; False
        as soon as a statement's row count is not the number of its records."""
        database = self.session.database
        for low, high, skipped, count in _ranges(kept, MAX_SKIPPED):
            params = [_PROCESSED, "[]", job_id, batch_id, low, high, *skipped]
            cursor = database.execute_sql(self._processed_statement(len(skipped)), params)  # type: ignore[no-untyped-call]
            if int(cursor.rowcount) != count:
                return False
        return True

    def _processed_statement(self, skipped: int) -> str:
        """UPDATE records SET status, parsed = raw, no errors, over one index range of a
        batch, ``skipped`` indexes left out."""
        sql = self._processed_sql.get(skipped)
        if sql is None:
            R = self.tables.records
            where = [R.job_id == "", R.batch_id == "", R.record_index.between(0, 0)]
            if skipped:
                where.append(R.record_index.not_in([0] * skipped))
            query = R.update(
                {R.status: "", R.parsed: R.raw, R.errors: "", R.processing_error: pw.SQL("NULL")}
            ).where(*where)
            sql, params = query.sql()
            assert params == ["", "", "", "", 0, 0, *[0] * skipped], sql
            self._processed_sql[skipped] = sql
        return sql

    def remember_read(self, job_id: str, batch_id: str, texts: dict[int, str]) -> None:
        """Keep a batch's raw texts as read, for its completion (a few batches at most)."""
        with self._read_lock:
            self._read[(job_id, batch_id)] = texts
            self._read.move_to_end((job_id, batch_id))
            while len(self._read) > MAX_REMEMBERED:
                self._read.popitem(last=False)

    def forget_read(self, job_id: str, batch_id: str) -> None:
        """Drop a batch's raw texts once its completion ran (or was refused)."""
        with self._read_lock:
            self._read.pop((job_id, batch_id), None)

    def _unnest(self, chunk: Sequence[RecordRow]) -> None:
        joined = _joined_params(chunk)
        cached = (joined is not None) in self._unnest_sql
        sql = self._unnest_statement(joined=joined is not None)
        params = _unnest_params(chunk) if joined is None else joined
        try:
            self.session.database.execute_sql(sql, params)  # type: ignore[no-untyped-call]
        except pw.ProgrammingError as exc:
            if not cached:
                raise
            # Built from column types that may have changed since (the table made again by
            # another process): build it afresh and run the write again.
            self._unnest_sql = {}
            raise StaleStatement(str(exc)) from exc

    def _chunks(
        self, rows: Sequence[RecordRow], params_per_row: int
    ) -> Iterable[Sequence[RecordRow]]:
        max_params = self.session.dialect.max_params
        if len(rows) == 1 or (
            len(rows) <= max_params // params_per_row and _records_bytes(rows) < CHUNK_BYTES
        ):
            return (rows,)  # one row cannot be split; the common case is weighed in C
        return chunked(rows, max_params // params_per_row, _record_bytes)

    def _unnest_statement(self, *, joined: bool) -> str:
        """PostgreSQL's records upsert: eight arrays, one per column, unnested into rows.

        The server parses eight array literals faster than a VALUES list of thousands of
        parameters, and a parsed form equal to the raw one (most records) is sent once, as
        NULL, and copied by COALESCE. The arrays are cast to the table's own column types,
        which are jsonb in tables Prisma created. ``joined``: each array is sent as one
        text, its values joined by a separator (``_joined_params``) and split on the
        server, which costs the client a fraction of adapting lists value by value.
        """
        sql = self._unnest_sql.get(joined)
        if sql is None:
            R = self.tables.records
            table = R._meta.table_name
            types = self.session.dialect.column_types(table)
            fields = record_fields(R)
            names = [f'"{f.column_name}"' for f in fields]
            given = _SPLIT if joined else "%s"
            arrays = ", ".join(f"{given}::{types.get(f.column_name, 'text')}[]" for f in fields)
            keys = {R.job_id.column_name, R.record_index.column_name}
            sets = ", ".join(
                f"{n} = EXCLUDED.{n}"
                for f, n in zip(fields, names, strict=True)
                if f.column_name not in keys
            )
            sql = (
                f'INSERT INTO "{table}" ({", ".join(names)}) '
                "SELECT u.j, u.b, u.i, u.s, u.r, COALESCE(u.p, u.r), u.e, u.x "
                f"FROM unnest({arrays}) AS u(j, b, i, s, r, p, e, x) "
                f'ON CONFLICT ("{R.job_id.column_name}", "{R.record_index.column_name}") '
                f"DO UPDATE SET {sets}"
            )
            if types:
                self._unnest_sql[joined] = sql
        return sql

    def _json_table_statement(self) -> str:
        """MariaDB's records upsert: the rows as one JSON document, an array of eight-value
        arrays (``_json_rows``), which ``JSON_TABLE`` turns back into rows on the server.

        The client sends one text instead of eight values a row, each of which PyMySQL
        escapes with a Python call, and sends it in base64, which has nothing to escape
        (PyMySQL's escaping of JSON text, quotes throughout, costs more than the rest of
        the statement). Every text column is read as LONGTEXT, so nothing is
        cut before the table's own columns take the values as they take parameters; a
        value that does not read as its column (ERROR ON ERROR) fails the statement. A
        parsed form equal to the raw one is sent as null and copied by COALESCE.
        """
        sql = self._json_sql
        if sql is None:
            R = self.tables.records
            names = [f"`{f.column_name}`" for f in record_fields(R)]
            columns = ", ".join(
                f"c{k} {'INT' if k == 2 else 'LONGTEXT CHARACTER SET utf8mb4'} "
                f"PATH '$[{k}]' ERROR ON ERROR"
                for k in range(_RECORD_COLUMNS)
            )
            keys = {f"`{R.job_id.column_name}`", f"`{R.record_index.column_name}`"}
            sets = ", ".join(f"{n} = VALUES({n})" for n in names if n not in keys)
            sql = self._json_sql = (
                f"INSERT INTO `{R._meta.table_name}` ({', '.join(names)}) "
                "SELECT t.c0, t.c1, t.c2, t.c3, t.c4, COALESCE(t.c5, t.c4), t.c6, t.c7 "
                "FROM JSON_TABLE(CONVERT(FROM_BASE64(%s) USING utf8mb4), "
                f"'$[*]' COLUMNS ({columns})) AS t "
                f"ON DUPLICATE KEY UPDATE {sets}"
            )
        return sql

    def _values_sql(self, rows: int) -> str:
        """The SQL of the records upsert for ``rows`` rows, with placeholders."""
        sql = self._upsert_sql.get(rows)
        if sql is None:
            R = self.tables.records
            key = [R.job_id, R.record_index]
            rest = [R.batch_id, R.status, R.raw, R.parsed, R.errors, R.processing_error]
            fields = record_fields(R)
            target = key if self.session.dialect.upsert_names_target else None
            placeholder = ("", "", 0, "", "", "", "", "")
            query = R.insert_many([placeholder] * rows, fields=fields).on_conflict(
                conflict_target=target, preserve=rest
            )
            sql, params = query.sql()
            assert len(params) == rows * len(fields), "every value must be a placeholder"
            self._upsert_sql[rows] = sql
        return sql

    # -- reads ----------------------------------------------------------------------------

    def select(self, *where: Any) -> list[ProcessedRecord]:
        """The records matching ``where``, by record index."""
        R = self.tables.records
        query: Any = R.select(
            R.record_index, R.status, R.raw, R.parsed, R.errors, R.processing_error
        ).where(*where)
        # No ORDER BY: with one, SQLite walks the (jobId, recordIndex) index over the whole
        # job to spare a sort, instead of using the index of the filter (batch or status).
        # Rows come straight from the driver's cursor: Peewee's row wrapper costs more.
        sql, params = query.sql()

        def read() -> list[ProcessedRecord]:
            rows = sorted(self.session.rows(sql, params), key=lambda row: int(row[0]))
            return [record_from_row(row) for row in rows]

        return self.session.read(read)

    def batch_raw(self, job_id: str, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        """A batch's records as (index, raw), by record index; no other column is decoded."""

        def read() -> list[tuple[int, dict[str, Any]]]:
            rows = self.session.rows(self._raw_sql, (job_id, batch_id))
            found, texts = raws_from_rows(rows)  # a jsonb column's records have no text
            self.remember_read(job_id, batch_id, texts)
            return found

        return self.session.run(read)

    def failed_page(
        self, job_id: str, after: int, limit: int, offset: int = 0
    ) -> list[ProcessedRecord]:
        """Up to ``limit`` failed or invalid records with an index above ``after``, in order,
        the first ``offset`` skipped."""
        R = self.tables.records
        query: Any = (
            R.select(R.record_index, R.status, R.raw, R.parsed, R.errors, R.processing_error)
            .where(R.job_id == job_id, R.status.in_(FAILED_RECORD_STATUSES), R.record_index > after)
            .order_by(R.record_index)
            .limit(limit)
        )
        if offset:
            query = query.offset(offset)
        sql, params = query.sql()
        return self.session.run(
            lambda: [record_from_row(r) for r in self.session.rows(sql, params)]
        )

    def counts(self, job_id: str) -> dict[str, int]:
        """The job's record counts by status."""
        R = self.tables.records
        query: Any = (
            R.select(R.status, pw.fn.COUNT(pw.SQL("*")))
            .where(R.job_id == job_id)
            .group_by(R.status)
            .tuples()
        )
        return {str(status): int(count) for status, count in query}


def chunked(
    rows: Sequence[Any], max_rows: int, weigh: Callable[[Any], int]
) -> Iterator[Sequence[Any]]:
    """Split a bulk write to ``max_rows`` rows and a few MiB (by ``weigh``) per statement."""
    limit = max(1, max_rows)
    start, size = 0, 0
    for i, row in enumerate(rows):
        size += weigh(row)
        if i + 1 - start >= limit or size >= CHUNK_BYTES:
            yield rows[start : i + 1]
            start, size = i + 1, 0
    if start < len(rows):
        yield rows[start:]


def text_bytes(row: tuple[Any, ...]) -> int:
    """The bytes of a row's text values: what weighs in a bulk statement."""
    return sum(len(v) for v in row if isinstance(v, str))


def _kept_rows(
    rows: Sequence[RecordRow], read: Mapping[int, str]
) -> tuple[list[int], list[RecordRow]]:
    """The indexes of the rows a set-based UPDATE can write (processed, no errors, parsed
    text equal to the raw text, which is the one read), and the other rows."""
    kept: list[int] = []
    rest: list[RecordRow] = []
    for row in rows:
        _, _, index, status, raw, parsed, errors, error = row
        if (
            status == _PROCESSED
            and errors == "[]"
            and error is None
            and (parsed is raw or parsed == raw)
            and read.get(index) == raw
        ):
            kept.append(index)
        else:
            rest.append(row)
    kept.sort()
    return kept, rest


def _ranges(indexes: Sequence[int], max_skipped: int) -> Iterator[tuple[int, int, list[int], int]]:
    """Ascending ``indexes`` as (low, high, skipped, count) ranges: each covers ``count`` of
    them from ``low`` to ``high``, less at most ``max_skipped`` indexes between them."""
    if not indexes:
        return
    if indexes[-1] - indexes[0] + 1 == len(indexes):  # no gap (the usual batch): one range
        yield indexes[0], indexes[-1], [], len(indexes)
        return
    low = high = indexes[0]
    skipped: list[int] = []
    count = 1
    for index in indexes[1:]:
        gap = index - high - 1
        if len(skipped) + gap > max_skipped:
            yield low, high, skipped, count
            low, skipped, count = index, [], 0
        else:
            skipped.extend(range(high + 1, index))
        high = index
        count += 1
    yield low, high, skipped, count


def record_fields(R: Any) -> list[Any]:
    """The records model's fields in the order of a RecordRow."""
    return [
        R.job_id,
        R.batch_id,
        R.record_index,
        R.status,
        R.raw,
        R.parsed,
        R.errors,
        R.processing_error,
    ]


def _unnest_params(rows: Sequence[RecordRow]) -> list[list[Any]]:
    """The columns of ``rows`` as eight lists: a parsed form equal to the raw one is None."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    columns[5] = [
        None if parsed == raw else parsed
        for raw, parsed in zip(columns[4], columns[5], strict=True)
    ]
    return columns


def _joined_params(rows: Sequence[RecordRow]) -> list[str] | None:
    """The columns of ``rows`` as ``_unnest_params`` gives them, each as one text: its
    values joined by ``_SEPARATOR``, NULL as ``_NULL`` (split again by ``_SPLIT``). None
    when a value could not be told apart after the split (a text holding the separator,
    one equal to the NULL mark, a value neither text nor int) or there are fewer than two
    rows (one empty text would split into no value at all). Neither character is ever raw
    in JSON text, which escapes control characters."""
    if len(rows) < 2:
        return None
    joined: list[str] = []
    for column in _unnest_params(rows):
        kinds = set(map(type, column))
        if kinds == {int}:
            joined.append(_SEPARATOR.join(map(str, column)))
            continue
        if not kinds <= {str, type(None)} or _NULL in column:
            return None
        if type(None) in kinds:
            column = [_NULL if value is None else value for value in column]
        text = _SEPARATOR.join(column)
        if text.count(_SEPARATOR) != len(column) - 1:
            return None
        joined.append(text)
    return joined


def _json_rows(rows: Sequence[RecordRow]) -> str | None:
    """``rows`` as one JSON array of arrays in base64, a parsed form equal to the raw one
    as null (``_json_table_statement``); None when a value has no JSON form (a text that
    is not UTF-8): the VALUES list sends those rows instead."""
    try:
        document = to_json(
            [row if row[5] != row[4] else (*row[:5], None, *row[6:]) for row in rows]
        )
    except (TypeError, ValueError):
        return None
    return base64.b64encode(document).decode("ascii")


def _escaped_bytes(text: str) -> int:
    """About the bytes of ``text`` as a MySQL client sends it: UTF-8, each quote and
    backslash escaped."""
    return len(text.encode()) + text.count("\\") + text.count('"') + text.count("'")


def _records_bytes(rows: Sequence[RecordRow]) -> int:
    """What ``_record_bytes`` sums to over ``rows``, without a Python call per row."""
    texts = sum(sum(map(len, map(itemgetter(c), rows))) for c in (4, 5, 6))
    return texts + sum(map(len, filter(None, map(itemgetter(7), rows))))


def _statement_bytes(rows: Sequence[RecordRow]) -> int:
    """About the bytes of a statement of ``rows``: its texts' length; for a long one (from
    WEIGH_BYTES on, where a server's limit may matter) their bytes as a MySQL client sends
    them, UTF-8 with each quote and backslash escaped."""
    size = _records_bytes(rows)
    if size < WEIGH_BYTES:
        return size
    return sum(_escaped_bytes(v) for row in rows for v in row if isinstance(v, str))


def _record_bytes(row: RecordRow) -> int:
    # Only the JSON and text columns can be long: weigh those, not every value.
    return len(row[4]) + len(row[5]) + len(row[6]) + len(row[7] or "")
