"""Record validation against a pydantic model class, with the error codes of the
TypeScript core.

A record that fails gets one :class:`~batchactions_peewee.ValidationError` per problem
pydantic reports: the field path joined with ``.``, pydantic's message, and a code:

- ``REQUIRED``: the field is missing;
- ``PATTERN_MISMATCH``: a string does not match its pattern or its format (date, date-time,
  time, duration, UUID, URL, IP address);
- ``CUSTOM_VALIDATION``: a validator of the model raised (``ValueError``, ``AssertionError``,
  ``PydanticCustomError`` or anything else);
- ``TYPE_MISMATCH``: every other problem (wrong type, out of range, too long, not an enum
  member, ...).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, get_args

import pydantic
from pydantic_core.core_schema import ErrorType

from .. import checks, codec
from ..errors import InvalidInputError, InvalidValueError
from ..model import ValidationError

REQUIRED = "REQUIRED"
TYPE_MISMATCH = "TYPE_MISMATCH"
PATTERN_MISMATCH = "PATTERN_MISMATCH"
CUSTOM_VALIDATION = "CUSTOM_VALIDATION"

_PYDANTIC_ERROR_TYPES = frozenset(get_args(ErrorType))
_FORMAT_ERROR_TYPES = frozenset(
    {
        "string_pattern_mismatch",
        "date_parsing",
        "date_from_datetime_parsing",
        "date_from_datetime_inexact",
        "datetime_parsing",
        "datetime_from_date_parsing",
        "datetime_object_invalid",
        "time_parsing",
        "time_delta_parsing",
        "uuid_parsing",
        "uuid_version",
        "url_parsing",
        "url_scheme",
        "url_syntax_violation",
    }
)
# pydantic's network types (IPvAnyAddress, IPv4Network, ...) raise custom errors named so.
_FORMAT_ERROR_PREFIXES = ("ip_",)
_VALIDATOR_ERROR_TYPES = frozenset({"value_error", "assertion_error"})


def check_schema(schema: object) -> type[pydantic.BaseModel] | None:
    """``schema`` must be None or a pydantic model class whose dump is a dict, with fields
    (or ``extra="allow"``): a model without them would validate every record as ``{}``."""
    if schema is None:
        return None
    if (
        not isinstance(schema, type)
        or not issubclass(schema, pydantic.BaseModel)
        or issubclass(schema, pydantic.RootModel)
    ):
        raise InvalidInputError(f"schema must be a pydantic model class, got {schema!r}")
    if schema is pydantic.BaseModel:
        raise InvalidInputError(
            "schema must be a pydantic model class, got pydantic.BaseModel itself: "
            "name a subclass with the fields of a record"
        )
    if not schema.model_fields and schema.model_config.get("extra") != "allow":
        raise InvalidInputError(
            f"schema {schema.__name__} has no fields: every record would validate as {{}} "
            "(give it fields, or extra='allow')"
        )
    return schema


def error_code(pydantic_type: str) -> str:
    """Our error code for one pydantic error type."""
    if pydantic_type == "missing":
        return REQUIRED
    if pydantic_type in _FORMAT_ERROR_TYPES or pydantic_type.startswith(_FORMAT_ERROR_PREFIXES):
        return PATTERN_MISMATCH
    if pydantic_type in _VALIDATOR_ERROR_TYPES or pydantic_type not in _PYDANTIC_ERROR_TYPES:
        # Not one of pydantic's own types: a validator raised a PydanticCustomError.
        return CUSTOM_VALIDATION
    return TYPE_MISMATCH


def utf8_text(text: str) -> str:
    """A message of ours made storable (see ``checks.storable_text``)."""
    return checks.storable_text(text)


def _storable(value: Any) -> Any:
    """The offending value when it can be stored as JSON, else None."""
    try:
        codec.dumps(value)
    except InvalidValueError:
        return None
    return value


def _from_pydantic(error: Any) -> ValidationError:
    code = error_code(error["type"])
    return ValidationError(
        field=".".join(str(part) for part in error["loc"]),
        message=utf8_text(error["msg"]),
        code=code,
        value=None if code == REQUIRED else _storable(error.get("input")),
        severity="error",
        metadata={"type": error["type"]},
    )


_BASE_VALIDATE = pydantic.BaseModel.model_validate.__func__  # type: ignore[attr-defined]
_BASE_DUMP = pydantic.BaseModel.model_dump


@lru_cache(maxsize=256)
def _keeps_pydantic_methods(schema: type[pydantic.BaseModel]) -> bool:
    """True unless ``schema`` overrides ``model_validate`` or ``model_dump``."""
    own_validate = getattr(schema.model_validate, "__func__", None)
    return own_validate is _BASE_VALIDATE and schema.model_dump is _BASE_DUMP


def _validated_dump(schema: type[pydantic.BaseModel], data: Any) -> Any:
    """``schema.model_validate(data).model_dump(mode="json")``.

    When the schema keeps pydantic's own ``model_validate`` and ``model_dump`` and its
    validator returns an instance of the schema itself, the call goes to its validator
    and serializer directly: the same result, without the two wrappers' keyword handling.
    A schema that overrides either method gets its override, and what a validator returns
    in the schema's place (a subclass, say) is dumped by its own ``model_dump``. The
    validator and serializer are looked up at each call: a rebuilt schema is used as it
    is now.
    """
    try:
        direct = _keeps_pydantic_methods(schema)
    except TypeError:  # a class that cannot be hashed (its metaclass defines __eq__ only)
        direct = False
    if not direct:
        return schema.model_validate(data).model_dump(mode="json")
    instance = schema.__pydantic_validator__.validate_python(data)
    if type(instance) is not schema:
        return instance.model_dump(mode="json")
    return schema.__pydantic_serializer__.to_python(instance, mode="json")


def validate_record(
    schema: type[pydantic.BaseModel], data: dict[str, Any]
) -> tuple[dict[str, Any], list[ValidationError]]:
    """Validate ``data``: (the model's JSON-mode dump, []) or (``data``, its errors).

    A schema whose dump is not a JSON object (a ``model_serializer`` returning a list, say)
    cannot give a record's parsed form: InvalidInputError, before anything is written.
    """
    try:
        dumped = _validated_dump(schema, data)
    except pydantic.ValidationError as exc:
        return data, [_from_pydantic(e) for e in exc.errors(include_url=False)]
    except Exception as exc:  # a validator raised something pydantic does not wrap
        message = utf8_text(f"{type(exc).__name__}: {exc}")
        return data, [
            ValidationError(
                field="",
                message=message,
                code=CUSTOM_VALIDATION,
                severity="error",
                metadata={"type": type(exc).__name__},
            )
        ]
    if type(dumped) is not dict:
        raise InvalidInputError(
            f"schema {schema.__name__} dumps a record as {type(dumped).__name__}, not as a JSON "
            "object: a record's parsed form must be one"
        )
    return dumped, []
