"""JSON text codec for the JSON columns, and the input checks every store shares.

Values are written as compact UTF-8 JSON text (SQLite's JSON1 may be missing, and the
TypeScript adapters write text too). A value is accepted only if it reads back exactly as
given, so nothing is silently coerced: NaN, Infinity, bytes, sets, non-string keys and lone
surrogates are refused with :class:`~batchactions_peewee.errors.InvalidValueError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic_core import from_json, to_json

from .errors import InvalidIdentifierError, InvalidValueError

MAX_ID_LENGTH = 36
MAX_WORKER_ID_LENGTH = 128
#: INTEGER columns (indexes, counts, totalRecords) are 32-bit on MySQL and PostgreSQL.
MAX_INT = 2**31 - 1
#: BIGINT columns (epoch-ms timestamps).
MAX_BIGINT = 2**63 - 1
#: ``processingError`` is TEXT: 65,535 bytes on MySQL, the smallest of the three.
MAX_TEXT_BYTES = 65_535


def _no_json_form(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} has no JSON form")


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_no_json_form
)


def dumps(value: Any, *, what: str = "value", record: int | None = None) -> str:
    """Encode ``value`` as JSON text, refusing anything that would not read back unchanged.

    Errors name the value as ``what`` ("raw of record 7" when ``record`` is given: the
    bulk paths pass the index rather than build a message per record that nobody reads).
    """
    if not value and type(value) in (list, dict):
        return "[]" if type(value) is list else "{}"
    # pydantic-core's encoder and decoder (Rust; pydantic already depends on it) write and
    # check the common case in a third of the time the standard library takes to write it.
    # What they cannot carry exactly goes the standard library's way below, whose errors
    # name the problem.
    try:
        text = to_json(value, inf_nan_mode="null").decode()
        if from_json(text) == value:  # ValueError too when nested past its depth limit
            return text
    except (TypeError, ValueError):
        pass
    if record is not None:
        what = f"{what} of record {record}"
    try:
        text = _ENCODER.encode(value)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise InvalidValueError(f"{what} cannot be stored as JSON: {exc}") from None
    if json.loads(text) != value:
        raise InvalidValueError(
            f"{what} would not read back unchanged from JSON "
            "(keys must be strings; tuples and other containers become lists)"
        )
    return text


def dumps_each(values: list[Any], *, what: str, records: Sequence[int]) -> list[str]:
    """``dumps`` of each value (of the records whose indexes ``records`` gives, in the same
    order), the read-back check done once for the whole list: a fifth less time per value
    than one check per value. A list that fails it is done again value by value, so that
    the error names the value at fault."""
    if len(values) == 1:  # one value (save_processed_record): no list to build and check
        return [dumps(values[0], what=what, record=records[0])]
    try:
        texts = [to_json(value, inf_nan_mode="null").decode() for value in values]
        if from_json("[" + ",".join(texts) + "]") == values:
            return texts
    except (TypeError, ValueError):
        pass
    return [dumps(v, what=what, record=index) for v, index in zip(values, records, strict=True)]


def encodes_like(value: Any, checked: Any, checked_text: str) -> bool:
    """True when ``value`` would be stored as ``checked_text``, the text of ``checked``, a
    value that ``dumps`` accepted (a record's parsed form is often its raw form). Equal
    values may differ in JSON (1 == 1.0 == True), so the texts are compared too."""
    if value is checked:
        return True
    if value != checked:
        return False
    try:
        return bool(to_json(value, inf_nan_mode="null").decode() == checked_text)
    except (TypeError, ValueError):
        return False


def loads(value: Any) -> Any:
    """Decode a JSON column as any adapter stores it: text, bytes, or an already-decoded value."""
    if type(value) is str and value[:1] in ("{", "["):
        # Our own columns: JSON text of an object or array (the hot path of every read).
        return _parse(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        value = _parse(value)
    if isinstance(value, str):
        # Our JSON columns hold objects and arrays only. A string means JSON text stored as
        # a JSON string: Prisma does that with the JSON.stringify output state-prisma gives
        # it (state-prisma's parseJson decodes twice too).
        value = json.loads(value)
    return value


def _parse(text: str) -> Any:
    # pydantic-core's parser is several times the standard library's; it refuses escaped
    # lone surrogates, which JSON.stringify writes and json.loads reads.
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)


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
