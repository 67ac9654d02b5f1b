"""CSV and JSON Lines sources: rows stream one at a time, and a bad row never stops a file."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import random
import sys
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batchactions_peewee.engine.sources import (
    BAD_ROW_TEXT_LIMIT,
    SNIFF_BYTES,
    SourceError,
    SourceRow,
    check_encoding,
    detect_format,
    open_source,
    read_csv,
    read_jsonl,
    source_error,
    with_source_errors,
)
from batchactions_peewee.engine.validation import CUSTOM_VALIDATION, REQUIRED, validate_record
from batchactions_peewee.errors import InvalidInputError


def csv_rows(data: bytes) -> list[SourceRow]:
    return list(read_csv(io.BytesIO(data)))


def jsonl_rows(data: bytes) -> list[SourceRow]:
    return list(read_jsonl(io.BytesIO(data)))


# -- CSV ---------------------------------------------------------------------------------


def test_csv_rows_are_dicts_of_strings_keyed_by_the_header() -> None:
    rows = csv_rows(b"email,name,age\na@x.io,Ann,31\nb@x.io,,\n")
    assert [r.data for r in rows] == [
        {"email": "a@x.io", "name": "Ann", "age": "31"},
        {"email": "b@x.io", "name": "", "age": ""},
    ]
    assert [r.line for r in rows] == [2, 3]
    assert all(r.error is None for r in rows)


def test_csv_strips_a_utf8_bom_and_spaces_around_header_names() -> None:
    [row] = csv_rows(b"\xef\xbb\xbfemail , name\r\nz@x.io,Zo\xc3\xab\r\n")
    assert row.data == {"email": "z@x.io", "name": "Zoë"}


def test_csv_quoted_newlines_stay_in_the_field_and_line_numbers_follow_the_file() -> None:
    rows = csv_rows(b'a,b\n"one\ntwo",2\n\n3,4\n')
    assert [(r.line, r.data) for r in rows] == [
        (2, {"a": "one\ntwo", "b": "2"}),
        (5, {"a": "3", "b": "4"}),
    ]


def test_csv_skips_blank_lines_and_rows_of_empty_cells() -> None:
    rows = csv_rows(b"a,b\n\n,\n1,2\n\r\n")
    assert [r.data for r in rows] == [{"a": "1", "b": "2"}]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"1,2,3", "line 3: 3 fields where the header has 2"),
        (b"1", "line 3: 1 fields where the header has 2"),
        (b'"x"y,2', "line 3: ',' expected after '\"'"),
    ],
)
def test_a_malformed_csv_row_is_a_bad_row_and_the_next_rows_still_read(
    line: bytes, message: str
) -> None:
    rows = csv_rows(b"a,b\n1,2\n" + line + b"\n5,6\n")
    assert [r.data for r in rows] == [{"a": "1", "b": "2"}, None, {"a": "5", "b": "6"}]
    bad = rows[1]
    assert (bad.line, bad.error, bad.text) == (3, message, line.decode())


def test_csv_bytes_that_are_not_utf8_make_a_bad_row_with_the_bytes_escaped() -> None:
    rows = csv_rows(b"name,city\nJos\xe9,Lisboa\nAna,Porto\n")
    assert rows[0].data is None
    assert rows[0].error == "line 2: not UTF-8 (byte 0xe9 at position 4)"
    assert rows[0].text == "Jos\\xe9,Lisboa"
    assert rows[1].data == {"name": "Ana", "city": "Porto"}


def test_an_unterminated_quote_is_one_bad_row_naming_the_line_it_starts_on() -> None:
    rows = csv_rows(b'a,b\n1,2\n"open,3\n4,5\n')
    assert rows[0].data == {"a": "1", "b": "2"}
    [bad] = rows[1:]
    assert bad.line == 3
    assert bad.error == "line 3: unexpected end of data"
    assert bad.text == '"open,3\n4,5'


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "data.csv is empty: a CSV file starts with a header line"),
        (b"\n\r\n\n", "data.csv is empty: a CSV file starts with a header line"),
        (b",,\n1,2,3\n", "data.csv: the header (line 1) is empty"),
        (b"a,,b\n1,2,3\n", "data.csv: column 2 of the header (line 1) has no name"),
        (b"a,b,a\n1,2,3\n", "data.csv: the header (line 1) repeats a"),
        (b"caf\xe9\n1\n", "data.csv: cannot read the header: line 1: not UTF-8"),
    ],
)
def test_a_csv_file_without_a_usable_header_is_refused_as_a_whole(
    data: bytes, message: str
) -> None:
    with pytest.raises(SourceError) as caught:
        read_csv(io.BytesIO(data), name="data.csv")
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_csv_delimiter_can_be_changed() -> None:
    [row] = list(read_csv(io.BytesIO(b"a;b\n1,5;2\n"), delimiter=";"))
    assert row.data == {"a": "1,5", "b": "2"}


header_names = st.lists(
    st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zs"]), min_size=1, max_size=8),
    min_size=1,
    max_size=5,
    unique=True,
)
cell = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12)


@given(st.data())
def test_any_table_written_by_csv_writer_reads_back_cell_for_cell(data: st.DataObject) -> None:
    header = data.draw(header_names)
    table = data.draw(st.lists(st.lists(cell, min_size=len(header), max_size=len(header))))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(table)
    rows = csv_rows(out.getvalue().encode("utf-8"))
    expected = [dict(zip(header, r, strict=True)) for r in table if any(r)]
    assert [r.data for r in rows] == expected
    assert [r.line for r in rows] == sorted(r.line for r in rows)


# -- JSON Lines ----------------------------------------------------------------------------


def test_jsonl_rows_are_the_objects_of_each_line_and_blank_lines_are_skipped() -> None:
    rows = jsonl_rows(b'\xef\xbb\xbf{"a": 1, "b": [true, null]}\n\n  \n{"a": "\xc3\xa9"}\r\n')
    assert [(r.line, r.data) for r in rows] == [(1, {"a": 1, "b": [True, None]}), (4, {"a": "é"})]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"a": 1,}', "line 2: not JSON: Expecting property name enclosed in double quotes"),
        (b"[1, 2]", "line 2: an array, not a JSON object"),
        (b'"text"', "line 2: a string, not a JSON object"),
        (b"42", "line 2: a number, not a JSON object"),
        (b"null", "line 2: a null, not a JSON object"),
        (b'{"a": NaN}', "line 2: not JSON: NaN is not a JSON value"),
        (b'{"a": -Infinity}', "line 2: not JSON: -Infinity is not a JSON value"),
        (b'{"a": 1e999}', "line 2: value cannot be stored as JSON"),
        (b'{"a": "\\ud800"}', "line 2: value cannot be stored as JSON"),
        (b'{"a": "\xff"}', "line 2: not UTF-8 (byte 0xff at position 8)"),
        (b"[" * 100_000, "line 2: not JSON"),
    ],
)
def test_a_bad_jsonl_line_is_a_bad_row_and_the_next_lines_still_read(
    line: bytes, message: str
) -> None:
    rows = jsonl_rows(b'{"n": 1}\n' + line + b'\n{"n": 3}\n')
    assert [r.data for r in rows] == [{"n": 1}, None, {"n": 3}]
    bad = rows[1]
    assert bad.line == 2
    assert bad.error is not None and bad.error.startswith(message)
    text = line.decode("utf-8", "backslashreplace")
    if len(text) > BAD_ROW_TEXT_LIMIT:  # the 100,000 brackets, cut
        text = f"{text[:BAD_ROW_TEXT_LIMIT]}... [cut: {len(text)} characters in all]"
    assert bad.text == text


def _endless_lines(template: bytes) -> Iterator[bytes]:
    n = 0
    while True:
        n += 1
        yield template.replace(b"N", str(n).encode())


class CountingStream(io.RawIOBase):
    """An endless stream of lines that counts the bytes read from it."""

    def __init__(self, header: bytes, template: bytes) -> None:
        self.lines = itertools.chain([header], _endless_lines(template))
        self.buffer = b""
        self.bytes_read = 0

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self.buffer += next(self.lines)
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        self.bytes_read += len(data)
        return data

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size > 0, "an endless stream cannot be read whole"
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self.buffer:
            self.buffer += next(self.lines)
        return self._take(self.buffer.index(b"\n") + 1)


@pytest.mark.parametrize(
    ("reader", "header", "template", "expected"),
    [
        (read_csv, b"n\n", b"N\n", ["1", "2", "3"]),
        (read_jsonl, b'{"n": 0}\n', b'{"n": N}\n', [0, 1, 2]),
    ],
)
def test_rows_stream_from_an_endless_file_that_is_read_no_further_than_its_first_bytes(
    reader: Any, header: bytes, template: bytes, expected: list[object]
) -> None:
    stream = CountingStream(header, template)
    rows = reader(stream)
    first = [next(rows) for _ in range(3)]
    assert [r.data["n"] for r in first] == expected
    # The first bytes, read ahead to check that the file is text, and the rest of the line
    # they end in: nothing more.
    assert SNIFF_BYTES <= stream.bytes_read <= SNIFF_BYTES + len(template) + 8


# -- bad-row records and validation ------------------------------------------------------


def test_a_bad_row_becomes_a_record_holding_its_line_text_and_error() -> None:
    [bad] = jsonl_rows(b"{oops\n")
    record = bad.as_record()
    assert record == {"_line": 1, "_raw": "{oops", "_error": bad.error}
    assert source_error(record) == bad.error
    assert source_error({"_line": 1, "_raw": "x", "_error": "e", "more": 1}) is None
    assert source_error({"email": "a@x.io"}) is None


def test_without_a_schema_good_records_validate_unchanged() -> None:
    schema = with_source_errors(None)
    record = {"a": 1, "_b": [1.5, None], "c d": {"e": "f"}}
    assert validate_record(schema, record) == (record, [])


@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=5), inner, max_size=3)
            ),
            max_leaves=8,
        ),
        max_size=5,
    )
)
def test_without_a_schema_any_json_object_validates_unchanged(record: dict[str, Any]) -> None:
    if source_error(record) is not None:
        return
    assert validate_record(with_source_errors(None), record) == (record, [])


class Contact(pydantic.BaseModel):
    email: str
    age: int | None = None

    @pydantic.model_validator(mode="before")
    @classmethod
    def lower(cls, data: Any) -> Any:
        return {**data, "email": data["email"].lower()}  # would raise on a bad-row record


@pytest.mark.parametrize("schema", [None, Contact])
def test_a_bad_row_record_is_invalid_with_the_rows_own_error(
    schema: type[pydantic.BaseModel] | None,
) -> None:
    [bad] = csv_rows(b"email,age\na@x.io,1,2\n")
    parsed, errors = validate_record(with_source_errors(schema), bad.as_record())
    assert parsed == bad.as_record()
    assert [(e.field, e.code, e.message) for e in errors] == [
        ("", CUSTOM_VALIDATION, "line 2: 3 fields where the header has 2")
    ]


def test_a_schema_with_bad_rows_rejected_still_validates_as_the_schema_says() -> None:
    schema = with_source_errors(Contact)
    assert validate_record(schema, {"email": "A@X.IO", "age": "7"}) == (
        {"email": "a@x.io", "age": 7},
        [],
    )
    _, errors = validate_record(schema, {"email": "a@x.io", "age": "old"})
    assert [(e.field, e.code) for e in errors] == [("age", "TYPE_MISMATCH")]
    _, errors = validate_record(with_source_errors(None), {"x": 1})
    assert errors == []
    _, errors = validate_record(with_source_errors(pydantic.create_model("M", x=(int, ...))), {})
    assert [(e.field, e.code) for e in errors] == [("x", REQUIRED)]


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.csv", "csv"),
        ("A.CSV", "csv"),
        ("dir.v2/a.jsonl", "jsonl"),
        ("a.ndjson", "jsonl"),
        ("a.json", None),
        ("a", None),
    ],
)
def test_format_is_detected_from_the_extension(path: str, expected: str | None) -> None:
    assert detect_format(path) == expected


def test_open_source_reads_a_file_and_refuses_a_missing_one(tmp_path: Any) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"a": 1}) + "\n")
    with open_source(str(path), "jsonl") as rows:
        assert [r.data for r in rows] == [{"a": 1}]
    missing = open_source(str(tmp_path / "missing.csv"), "csv")
    with pytest.raises(SourceError, match=r"^cannot read .*missing.csv: No such file"):
        missing.__enter__()


def test_open_source_refuses_standard_input_that_is_not_text(monkeypatch: Any) -> None:
    compressed = gzip.compress(b'{"a": 1}\n' * 100)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(compressed)))
    with pytest.raises(SourceError, match=r"^standard input is not text \(gzip-compressed\?\)$"):
        open_source("-", "jsonl").__enter__()


# -- files that are not text ----------------------------------------------------------------


def _noise(size: int, *, nul: bool = True) -> bytes:
    data = random.Random(7).randbytes(size)
    return data if nul else data.replace(b"\0", b"\1")


LATIN_1 = "name,city\nJosé,Lisboa\nInês,Évora\nAna,Porto\nJoão,Braga\n".encode("latin-1")

NOT_TEXT = [
    (gzip.compress(b"a,b\n1,2\n" * 1000), "data.csv is not text (gzip-compressed?)"),
    (b"PK\x03\x04\x14\x00\x06\x00" + _noise(500), "data.csv is not text (a zip archive, or "),
    (b"a,b\n1,\x002\n", "data.csv is not text: it holds a NUL byte (byte 7)"),
    (_noise(20_000), "data.csv is not text: it holds a NUL byte (byte "),
    ("a,b\n1,2\n".encode("utf-16"), "data.csv is UTF-16 text: convert it to UTF-8 first"),
    (_noise(20_000, nul=False), "data.csv is not UTF-8 text (byte 0x"),
    (
        LATIN_1,
        "data.csv is not UTF-8 text (byte 0xe9 at byte 14): give its encoding, "
        "e.g. --encoding latin-1",
    ),
]


@pytest.mark.parametrize("reader", [read_csv, read_jsonl])
@pytest.mark.parametrize(
    ("data", "message"),
    NOT_TEXT,
    ids=["gzip", "zip", "nul", "noise", "utf16", "noise-no-nul", "latin1"],
)
def test_a_file_that_is_not_text_is_refused_as_a_whole_before_a_row_is_read(
    reader: Any, data: bytes, message: str
) -> None:
    with pytest.raises(SourceError) as caught:
        reader(io.BytesIO(data), name="data.csv")
    assert str(caught.value).startswith(message), caught.value
    assert "\n" not in str(caught.value)


def test_an_occasional_line_that_is_not_utf8_stays_a_bad_row_of_a_text_file() -> None:
    lines = [f"user{i}@x.io,{i}".encode() for i in range(50)]
    lines[3] = "Jos\xe9@x.io,3".encode("latin-1")
    rows = csv_rows(b"email,n\n" + b"\n".join(lines) + b"\n")
    assert len(rows) == 50
    assert [r.line for r in rows if r.data is None] == [5]


def test_a_first_line_longer_than_the_bytes_read_ahead_is_read_whole() -> None:
    # The bytes read ahead end in the middle of the line, and of a two-byte character.
    value = "é" * SNIFF_BYTES
    rows = jsonl_rows(json.dumps({"a": value}, ensure_ascii=False).encode() + b'\n{"b": 2}\n')
    assert [r.data for r in rows] == [{"a": value}, {"b": 2}]


def test_encoding_names_the_files_encoding() -> None:
    rows = list(read_csv(io.BytesIO(LATIN_1), encoding="latin-1"))
    assert [r.data for r in rows][:2] == [
        {"name": "José", "city": "Lisboa"},
        {"name": "Inês", "city": "Évora"},
    ]
    [row] = jsonl_rows_in('{"name": "Zoë"}\n'.encode("cp1252"), "cp1252")
    assert row.data == {"name": "Zoë"}


def jsonl_rows_in(data: bytes, encoding: str) -> list[SourceRow]:
    return list(read_jsonl(io.BytesIO(data), encoding=encoding))


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ("klingon", "unknown encoding 'klingon'"),
        ("utf-16", "encoding utf-16 is not supported: it must keep ASCII as it is"),
        ("base64", "unknown encoding 'base64'"),
    ],
)
def test_an_encoding_that_cannot_be_read_line_by_line_is_refused(
    encoding: str, message: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        check_encoding(encoding)
    assert str(caught.value).startswith(message)
    assert check_encoding("latin-1") == "latin-1"
    assert check_encoding("utf-8-sig") == "utf-8-sig"


# -- the header ------------------------------------------------------------------------------


def test_a_csv_source_names_its_header_columns_and_jsonl_has_none() -> None:
    rows = read_csv(io.BytesIO(b"id,email,name\n1,a@x.io,Ann\n"))
    assert (rows.columns, rows.header_warning) == (["id", "email", "name"], None)
    assert read_jsonl(io.BytesIO(b'{"a": 1}\n')).columns is None


@pytest.mark.parametrize(
    ("first_line", "shown"),
    [
        (b"1,ada@x.io,Ada", "1, ada@x.io"),
        (b"17,2024-01-31,3.5,-2,x", "17, 2024-01-31, 3.5, ..."),
        (b"Ada,12/31/1990", "12/31/1990"),
    ],
)
def test_a_header_that_looks_like_data_is_taken_with_a_warning(
    first_line: bytes, shown: str
) -> None:
    rows = read_csv(io.BytesIO(first_line + b"\n" + first_line + b"\n"), name="people.csv")
    assert rows.columns == first_line.decode().split(",")
    assert rows.header_warning == (
        f"people.csv: line 1 may be data, not a header ({shown} read as column names); "
        "a CSV file starts with a header line"
    )
    assert len(list(rows)) == 1


# -- long lines -----------------------------------------------------------------------------


def test_an_unreadable_line_over_the_limit_is_kept_cut_with_a_marker() -> None:
    long_line = "x," * 20_000 + "x"  # 20,001 fields where the header has 2
    rows = csv_rows(b"a,b\n" + long_line.encode() + b"\n1,2\n")
    bad = rows[0]
    assert bad.error == "line 2: 20001 fields where the header has 2"
    marker = "... [cut: 40001 characters in all]"
    assert bad.text == long_line[:BAD_ROW_TEXT_LIMIT] + marker
    assert bad.as_record()["_raw"] == bad.text
    assert rows[1].data == {"a": "1", "b": "2"}


def test_valid_data_is_never_cut() -> None:
    cell, value = "y" * 100_000, "z" * 3_000_000
    [row] = csv_rows(b"a,b\n" + cell.encode() + b",2\n")
    assert row.data == {"a": cell, "b": "2"}
    [row] = jsonl_rows(json.dumps({"v": value}).encode() + b"\n")
    assert row.data == {"v": value}


def test_a_bad_rows_error_holds_no_copy_of_the_row() -> None:
    [bad] = jsonl_rows(b'{"oops": ' + b"1" * 50_000 + b"\n")
    _, [error] = validate_record(with_source_errors(None), bad.as_record())
    assert error.value is None
    assert "1" * 100 not in json.dumps(error.to_json_dict())
