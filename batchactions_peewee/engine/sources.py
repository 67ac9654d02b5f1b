"""CSV and JSON Lines files read as a stream of rows, one line at a time.

Memory stays flat whatever the file's size. A row that cannot be read (a broken JSON line, a
CSV row with the wrong number of fields, bytes that are not UTF-8, a number JSON text cannot
hold) does not stop the file: it comes out as a :class:`SourceRow` whose ``error`` says what
is wrong, and :meth:`SourceRow.as_record` turns it into a *bad-row record*
``{"_line": n, "_raw": text, "_error": message}``. The command line stores every row as a
record and validates with :func:`with_source_errors`, so each bad row ends up as an
``invalid`` record carrying its error and its text. Only a file that is not text (its first
bytes are compressed, binary or mostly not in the file's encoding) and a CSV file without a
usable header are refused as a whole (:class:`SourceError`), before a row is read.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import pydantic
from pydantic_core import PydanticCustomError

from .. import codec
from ..errors import InvalidInputError, InvalidValueError, SourceError

FORMATS = ("csv", "jsonl")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}

#: The keys of a bad-row record, exactly these three.
LINE_KEY, RAW_KEY, ERROR_KEY = "_line", "_raw", "_error"
_BAD_ROW_KEYS = frozenset({LINE_KEY, RAW_KEY, ERROR_KEY})

#: A bad row's text is kept up to this many characters, then cut with a marker saying so.
BAD_ROW_TEXT_LIMIT = 10_000
#: The first bytes of a file, read ahead to tell whether it is text at all.
SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class SourceRow:
    """One row of a file: its data, or the error that kept it from being read.

    ``line`` is the 1-based number of the line the row starts on. For a bad row ``data`` is
    None and ``text`` holds the row as read, undecodable bytes escaped as ``\\xNN``; a text
    longer than ``BAD_ROW_TEXT_LIMIT`` characters is cut there and ends with
    ``... [cut: N characters in all]``.
    """

    line: int
    data: dict[str, Any] | None
    error: str | None = None
    text: str | None = None

    def as_record(self) -> dict[str, Any]:
        """The dict to store: the row's data, or the bad-row record for a bad row."""
        if self.data is not None:
            return self.data
        return {LINE_KEY: self.line, RAW_KEY: self.text or "", ERROR_KEY: self.error}


def source_error(record: object) -> str | None:
    """The error of a bad-row record (a dict of exactly ``_line``, ``_raw``, ``_error``)."""
    if isinstance(record, Mapping) and record.keys() == _BAD_ROW_KEYS:
        error = record[ERROR_KEY]
        return error if isinstance(error, str) else str(error)
    return None


# -- validation ---------------------------------------------------------------------------


class AnyRecord(pydantic.BaseModel):
    """Accepts any dict as it is: the schema used when the user names none."""

    model_config = pydantic.ConfigDict(extra="allow")


def _reject_bad_rows(cls: type[pydantic.BaseModel], data: Any) -> Any:
    error = source_error(data)
    if error is not None:
        # The error's input is None, not the row: the record's raw form holds its text already.
        custom = PydanticCustomError("source_error", "{error}", {"error": error})
        raise pydantic.ValidationError.from_exception_data(
            cls.__name__, [{"type": custom, "loc": (), "input": None}]
        )
    return data


def with_source_errors(schema: type[pydantic.BaseModel] | None) -> type[pydantic.BaseModel]:
    """``schema`` (or :class:`AnyRecord`) that also rejects bad-row records.

    A bad-row record then fails validation with one error carrying the row's own message
    (code CUSTOM_VALIDATION), so the worker stores it as ``invalid`` instead of handing it
    to the processor. Every other record validates exactly as ``schema`` says.
    """
    base = schema if schema is not None else AnyRecord
    validator = pydantic.model_validator(mode="before")(_reject_bad_rows)
    model: type[pydantic.BaseModel] = pydantic.create_model(
        base.__name__,
        __base__=base,
        __module__=base.__module__,
        __validators__={"reject_bad_rows": cast(Any, validator)},
    )
    return model


# -- reading ------------------------------------------------------------------------------


def detect_format(path: str) -> str | None:
    """``csv`` or ``jsonl`` from the file's extension (.csv, .jsonl, .ndjson), else None."""
    return _EXTENSIONS.get(Path(path).suffix.lower())


def check_encoding(encoding: str) -> str:
    """``encoding`` if the readers can use it: a known text encoding that keeps ASCII as it
    is (UTF-8, Latin-1, cp1252, Shift JIS, ...; not UTF-16), else InvalidInputError."""
    ascii_text = "".join(map(chr, range(128)))
    try:
        encoded = ascii_text.encode(encoding)
    except LookupError:
        raise InvalidInputError(f"unknown encoding {encoding!r}") from None
    # Lines are split at the byte 0x0a before they are decoded: ASCII must stay ASCII.
    if encoded.removeprefix(codecs.BOM_UTF8) != ascii_text.encode("ascii"):
        raise InvalidInputError(
            f"encoding {encoding} is not supported: it must keep ASCII as it is "
            "(utf-8, latin-1, cp1252, ...)"
        )
    return encoding


class Rows(Iterator[SourceRow]):
    """A file's rows as a stream (an iterator of :class:`SourceRow`), with what its header
    said: ``columns``, the CSV header's column names (None for JSON Lines), and
    ``header_warning``, a one-line message when the header looks like a row of data."""

    def __init__(
        self,
        rows: Iterator[SourceRow],
        columns: list[str] | None = None,
        header_warning: str | None = None,
    ) -> None:
        self._rows = rows
        self.columns = columns
        self.header_warning = header_warning

    def __next__(self) -> SourceRow:
        return next(self._rows)


@contextlib.contextmanager
def open_source(
    path: str, file_format: str, *, delimiter: str = ",", encoding: str = "utf-8"
) -> Iterator[Rows]:
    """Open ``path`` (``-`` is standard input) and yield its rows as a stream.

    The first bytes are read at once, and a CSV header too, so a file that is not text in
    ``encoding`` (compressed, binary) or a CSV file without a header fails here, before
    anything is written. Raises :class:`SourceError` with a one-line message.
    """
    if file_format not in FORMATS:
        raise SourceError(f"unknown format {file_format!r}; known: {', '.join(FORMATS)}")
    check_encoding(encoding)
    stream: IO[bytes]
    try:
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        name = "standard input" if path == "-" else path
        if file_format == "csv":
            yield read_csv(stream, delimiter=delimiter, name=name, encoding=encoding)
        else:
            yield read_jsonl(stream, name=name, encoding=encoding)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


#: What a file that is not text starts with, and what it then probably is.
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PK\x03\x04": "a zip archive, or an Excel workbook",
    b"%PDF-": "a PDF document",
}


def _encoding_label(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig") else encoding


def check_text(head: bytes, name: str, encoding: str = "utf-8", *, whole: bool = False) -> None:
    """Refuse a file whose first bytes ``head`` are not text in ``encoding``: a known
    compressed or binary format, a NUL byte, UTF-16, or more than half of its lines not
    decodable. ``whole``: ``head`` is the whole file (else its last line may be cut short).

    An occasional line that does not decode is left to the reader (a bad row); this is for
    files that are clearly not text, refused at once with one :class:`SourceError`.
    """
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise SourceError(f"{name} is not text ({kind}?)")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise SourceError(f"{name} is UTF-16 text: convert it to UTF-8 first")
    nul = head.find(b"\0")
    if nul >= 0:
        raise SourceError(f"{name} is not text: it holds a NUL byte (byte {nul + 1})")
    lines, start, bad = 0, 0, []
    pieces = head.split(b"\n")
    cut = not whole  # the last piece may end in the middle of a character
    if cut and len(pieces) > 1:
        pieces.pop()
        cut = False
    for piece in pieces:
        if piece.strip():
            lines += 1
            try:
                codecs.getincrementaldecoder(encoding)().decode(piece, final=not cut)
            except UnicodeDecodeError as exc:
                bad.append((start + exc.start, piece[exc.start]))
        start += len(piece) + 1
    if bad and len(bad) * 2 > lines:
        offset, byte = bad[0]
        raise SourceError(
            f"{name} is not {_encoding_label(encoding)} text (byte 0x{byte:02x} at byte "
            f"{offset + 1}): give its encoding, e.g. --encoding latin-1"
        )


class _Lines:
    """A binary stream's lines as text, counting them and keeping those of the current row.

    The stream's first ``SNIFF_BYTES`` are read at once and checked (:func:`check_text`).
    ``csv.reader`` pulls exactly the lines one record needs, so after each record
    ``take()`` returns that record's own text and the first decoding problem in it.
    """

    def __init__(self, stream: IO[bytes], name: str, encoding: str) -> None:
        check_encoding(encoding)
        head = stream.read(SNIFF_BYTES)
        check_text(head, name, encoding, whole=len(head) < SNIFF_BYTES)
        self._head = io.BytesIO(head)
        self._stream = stream
        self._encoding = encoding
        self._label = _encoding_label(encoding)
        self.number = 0  # lines read so far
        self.first = 1  # the line the current row starts on
        self._taken: list[str] = []
        self._problem: str | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def _readline(self) -> bytes:
        data = self._head.readline()
        return data if data.endswith(b"\n") else data + self._stream.readline()

    def __next__(self) -> str:
        data = self._readline()
        if not data:
            raise StopIteration
        self.number += 1
        if self.number == 1 and data.startswith(codecs.BOM_UTF8) and self._label == "UTF-8":
            data = data[len(codecs.BOM_UTF8) :]
        try:
            text = data.decode(self._encoding)
        except UnicodeDecodeError as exc:
            text = data.decode(self._encoding, "backslashreplace")
            if self._problem is None:
                self._problem = (
                    f"line {self.number}: not {self._label} "
                    f"(byte 0x{data[exc.start]:02x} at position {exc.start + 1})"
                )
        if not self._taken:
            self.first = self.number
        self._taken.append(text)
        return text

    def take(self) -> tuple[int, str, str | None]:
        """(first line, text, decoding problem) of the lines read since the last take."""
        text = "".join(self._taken).rstrip("\r\n")
        taken = (self.first, text, self._problem)
        self._taken.clear()
        self._problem = None
        return taken


def _bad(line: int, text: str, error: str) -> SourceRow:
    if len(text) > BAD_ROW_TEXT_LIMIT:  # unreadable, so cut; the marker says it was
        text = f"{text[:BAD_ROW_TEXT_LIMIT]}... [cut: {len(text)} characters in all]"
    return SourceRow(line=line, data=None, error=error, text=text)


def read_csv(
    stream: IO[bytes], *, delimiter: str = ",", name: str = "the file", encoding: str = "utf-8"
) -> Rows:
    """Rows of a CSV file whose first non-blank line is the header, as dicts of strings.

    The file's first bytes and its header are read now: a file that is not text, an empty
    file, an empty or duplicate column name or an unreadable header raises
    :class:`SourceError`; a header that looks like data (a cell that is a number, a date or
    an e-mail address) is taken all the same, with a ``header_warning``. Blank lines and
    rows whose every cell is empty are skipped. Cells are kept as the strings they are (an
    empty cell is ``""``).
    """
    lines = _Lines(stream, name, encoding)
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    line, header = _header(reader, lines, name)
    return Rows(_csv_rows(reader, lines, header), header, _header_warning(header, line, name))


def _header(reader: Any, lines: _Lines, name: str) -> tuple[int, list[str]]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            raise SourceError(f"{name} is empty: a CSV file starts with a header line") from None
        except csv.Error as exc:
            raise SourceError(f"{name}: cannot read the header: {exc}") from None
        line, _, problem = lines.take()
        if problem:
            raise SourceError(
                f"{name}: cannot read the header: {problem}: give the file's encoding, "
                "e.g. --encoding latin-1"
            )
        if row:
            break
    header = [cell.strip() for cell in row]
    if not any(header):
        raise SourceError(f"{name}: the header (line {line}) is empty")
    for position, column in enumerate(header, start=1):
        if not column:
            raise SourceError(f"{name}: column {position} of the header (line {line}) has no name")
    duplicates = sorted({c for c in header if header.count(c) > 1})
    if duplicates:
        raise SourceError(f"{name}: the header (line {line}) repeats {', '.join(duplicates)}")
    return line, header


#: A header cell that reads as a value: a number, a date, or an e-mail address.
_VALUE = re.compile(
    r"[-+]?(\d+([.,]\d*)?|[.,]\d+)([eE][-+]?\d+)?"
    r"|\d{4}-\d\d-\d\d([T ][\d:.]+)?|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}"
    r"|[^@\s]+@[^@\s]+\.\w+"
)


def _header_warning(header: list[str], line: int, name: str) -> str | None:
    values = [cell for cell in header if _VALUE.fullmatch(cell)]
    if not values:
        return None
    shown = ", ".join(values[:3]) + (", ..." if len(values) > 3 else "")
    return (
        f"{name}: line {line} may be data, not a header ({shown} read as column names); "
        "a CSV file starts with a header line"
    )


def _csv_rows(reader: Any, lines: _Lines, header: list[str]) -> Iterator[SourceRow]:
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line, text, _ = lines.take()
            yield _bad(line, text, f"line {line}: {exc}")
            continue
        line, text, problem = lines.take()
        if problem:
            yield _bad(line, text, problem)
        elif not any(row):
            continue  # a blank line, or a row of empty cells
        elif len(row) != len(header):
            yield _bad(
                line,
                text,
                f"line {line}: {len(row)} fields where the header has {len(header)}",
            )
        else:
            yield SourceRow(line=line, data=dict(zip(header, row, strict=True)))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_jsonl(stream: IO[bytes], *, name: str = "the file", encoding: str = "utf-8") -> Rows:
    """Rows of a JSON Lines file: one JSON object per line; blank lines are skipped.

    The file's first bytes are read now: a file that is not text raises
    :class:`SourceError`.
    """
    return Rows(_jsonl_rows(_Lines(stream, name, encoding)))


def _jsonl_rows(lines: _Lines) -> Iterator[SourceRow]:
    for _ in lines:
        line, text, problem = lines.take()
        if not text.strip():
            continue
        if problem:
            yield _bad(line, text, problem)
            continue
        try:
            value = json.loads(text, parse_constant=_no_constants)
        except json.JSONDecodeError as exc:
            yield _bad(line, text, f"line {line}: not JSON: {exc.msg} at column {exc.colno}")
            continue
        except (ValueError, RecursionError) as exc:
            yield _bad(line, text, f"line {line}: not JSON: {exc or type(exc).__name__}")
            continue
        if not isinstance(value, dict):
            kind = "an array" if isinstance(value, list) else f"a {_json_kind(value)}"
            yield _bad(line, text, f"line {line}: {kind}, not a JSON object")
            continue
        try:
            codec.dumps(value)  # e.g. 1e999 (infinite) or a lone surrogate "\ud800"
        except InvalidValueError as exc:
            yield _bad(line, text, f"line {line}: {exc}")
            continue
        yield SourceRow(line=line, data=value)


def _json_kind(value: object) -> str:
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


__all__ = [
    "BAD_ROW_TEXT_LIMIT",
    "ERROR_KEY",
    "FORMATS",
    "LINE_KEY",
    "RAW_KEY",
    "SNIFF_BYTES",
    "AnyRecord",
    "Rows",
    "SourceError",
    "SourceRow",
    "check_encoding",
    "check_text",
    "detect_format",
    "open_source",
    "read_csv",
    "read_jsonl",
    "source_error",
    "with_source_errors",
]
