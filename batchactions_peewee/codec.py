"""The JSON text codec of the JSON columns.

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

from .errors import InvalidValueError


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
    # check the common case faster than the standard library writes it. What they cannot
    # carry exactly goes the standard library's way below, whose errors name the problem.
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
    order), the read-back check done once for the whole list, which is cheaper than one per
    value. A list that fails it is done again value by value, so that the error names the
    value at fault."""
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


def loads_objects(texts: list[str]) -> list[dict[str, Any]] | None:
    """``loads`` of each text, when each is JSON text of an object that the fast parser
    reads (a worker's read of a batch: the hot path); None when one is not, for ``loads``
    to decode them one by one."""
    try:
        values = [from_json(text) for text in texts]
    except (TypeError, ValueError):
        return None
    return values if all(type(value) is dict for value in values) else None


def _parse(text: str) -> Any:
    # pydantic-core's parser is faster than the standard library's; it refuses escaped
    # lone surrogates, which JSON.stringify writes and json.loads reads.
    try:
        return from_json(text)
    except ValueError:
        return json.loads(text)
