"""Worker hooks: the four steps of the TypeScript core's per-record pipeline, around
validation and around the processor.

For each record of a batch: ``before_validate`` (may change the raw record), validation
against the schema, ``after_validate`` (sees valid and invalid records), ``before_process``
(may change what the processor gets), the processor with its retries, ``after_process``
(once the processor succeeded). A hook that raises fails its record, as a processor that
raises does, and is not retried. The store keeps each record's original raw data and, as its
parsed data, what the schema made of it: what the hooks return is handed on, never stored.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pydantic

from ..errors import InvalidInputError
from ..logfields import log_fields
from ..model import ProcessedRecord, RecordStatus, trusted_record
from .batch import Done, Processor, Ready, RecordProcessing, failed_record, invalid_record
from .events import ProcessingContext
from .validation import validate_record

logger = logging.getLogger(__name__)

#: ``before_validate(raw, context)``: the raw record to validate instead, or None to keep
#: the dict it was given (changed in place or not).
BeforeValidate = Callable[[dict[str, Any], ProcessingContext], "dict[str, Any] | None"]
#: ``after_validate(record, context)``: the record as validation left it, status VALID or
#: INVALID (with its errors); what it returns is ignored.
AfterValidate = Callable[[ProcessedRecord, ProcessingContext], object]
#: ``before_process(parsed, context)``: the dict to give the processor instead, or None to
#: give it the dict the hook was given (changed in place or not).
BeforeProcess = Callable[[dict[str, Any], ProcessingContext], "dict[str, Any] | None"]
#: ``after_process(parsed, context)``: the dict the processor got; what it returns is ignored.
AfterProcess = Callable[[dict[str, Any], ProcessingContext], object]


@dataclass(frozen=True)
class JobHooks:
    """Hooks a :class:`Worker` calls around each record's validation and processing.

    All four are optional:

    - ``before_validate(raw, context) -> dict | None``: the raw record the schema validates
      instead (None: the dict it was given, which it may change in place);
    - ``after_validate(record, context)``: a :class:`ProcessedRecord` with status VALID
      (``parsed`` is the schema's output) or INVALID (``errors`` says why), for looking at;
    - ``before_process(parsed, context) -> dict | None``: what the processor gets instead
      (None: the dict it was given, which it may change in place);
    - ``after_process(parsed, context)``: called once the processor has succeeded, with what
      it got.

    ``context`` is the record's :class:`ProcessingContext`, the processor's. The two validate
    hooks run only with a ``schema`` (a worker refuses them without one). ``before_validate``
    and ``before_process`` get a copy of the record, so what the store keeps (the original
    raw data; as parsed data, the schema's output, or the raw data without a schema) does
    not change. An exception from a hook fails the record (status failed, its message as
    ``processing_error``, as for a processor) and is not retried; so is a before hook that
    returns neither a dict nor None. ``after_process`` runs after the processor's last,
    successful attempt; if it raises, the record is failed but the processor is not run
    again.
    """

    before_validate: BeforeValidate | None = None
    after_validate: AfterValidate | None = None
    before_process: BeforeProcess | None = None
    after_process: AfterProcess | None = None

    def __post_init__(self) -> None:
        for hook in fields(self):
            value = getattr(self, hook.name)
            if value is not None and not callable(value):
                raise InvalidInputError(f"{hook.name} must be callable or None, got {value!r}")

    @property
    def any_set(self) -> bool:
        """Whether at least one hook is set."""
        return any(getattr(self, hook.name) is not None for hook in fields(self))

    @property
    def around_validation(self) -> bool:
        """Whether a hook that needs a schema is set."""
        return self.before_validate is not None or self.after_validate is not None


def check_hooks(hooks: object, *, has_schema: bool) -> JobHooks | None:
    """``hooks`` must be None or a JobHooks, whose validate hooks need a schema."""
    if hooks is None:
        return None
    if not isinstance(hooks, JobHooks):
        raise InvalidInputError(f"hooks must be a JobHooks, got {hooks!r}")
    if hooks.around_validation and not has_schema:
        raise InvalidInputError(
            "before_validate and after_validate run around validation: they need a schema"
        )
    return hooks


def record_processing(
    processor: Processor,
    schema: type[pydantic.BaseModel] | None,
    max_retries: int,
    retry_delay_ms: int,
    wait: Callable[[float, threading.Event], None],
    hooks: JobHooks | None,
) -> RecordProcessing:
    """The record pipeline of these settings; without hooks the plain one, in which no
    hook is looked for per record."""
    settings = (processor, schema, max_retries, retry_delay_ms, wait)
    if hooks is None or not hooks.any_set:
        return RecordProcessing(*settings)
    return HookedRecordProcessing(*settings, hooks)


@dataclass(frozen=True)
class HookedRecordProcessing(RecordProcessing):
    """RecordProcessing with the hooks around its steps (chosen once per batch, so that a
    worker without hooks runs the plain pipeline, with no check per record)."""

    hooks: JobHooks

    def __call__(
        self, index: int, raw: dict[str, Any], context: ProcessingContext
    ) -> Done | ProcessedRecord | None:
        ready = self.prepare(index, raw, context)
        if isinstance(ready, ProcessedRecord):  # invalid, or a hook failed
            return ready
        result = self._attempts(index, raw, ready[0], ready[1], context)
        return self.finish(index, raw, ready, result, context)

    def prepare(
        self, index: int, raw: dict[str, Any], context: ProcessingContext
    ) -> Ready | ProcessedRecord:
        parsed = raw
        if self.schema is not None:
            validated = self._validate(self.schema, index, raw, context)
            if isinstance(validated, ProcessedRecord):  # invalid, or a hook failed
                return validated
            parsed = validated
        given = parsed
        if self.hooks.before_process is not None:
            try:
                given = _handed_on(self.hooks.before_process, parsed, context, "before_process")
            except Exception as exc:
                return _hook_failed("before_process", index, raw, parsed, exc)
        return parsed, given

    def finish(
        self,
        index: int,
        raw: dict[str, Any],
        ready: Ready,
        result: Done | ProcessedRecord | None,
        context: ProcessingContext,
    ) -> Done | ProcessedRecord | None:
        if isinstance(result, tuple) and self.hooks.after_process is not None:
            parsed, given = ready
            try:
                self.hooks.after_process(given, context)
            except Exception as exc:
                # The processor succeeded: it is not run again.
                logger.debug(
                    "after_process failed for record %d: %s",
                    index,
                    exc,
                    extra=log_fields(context.job_id, context.batch_id),
                )
                return failed_record(index, raw, parsed, exc, result[3])
        return result

    def _validate(
        self,
        schema: type[pydantic.BaseModel],
        index: int,
        raw: dict[str, Any],
        context: ProcessingContext,
    ) -> dict[str, Any] | ProcessedRecord:
        """The record's parsed form, or the ProcessedRecord of an invalid record or of a
        failed hook."""
        data = raw
        if self.hooks.before_validate is not None:
            try:
                data = _handed_on(self.hooks.before_validate, raw, context, "before_validate")
            except Exception as exc:
                return _hook_failed("before_validate", index, raw, raw, exc)
        parsed, errors = validate_record(schema, data)
        # As without hooks, an invalid record's parsed data is its (original) raw data.
        invalid = invalid_record(index, raw, errors) if errors else None
        if self.hooks.after_validate is not None:
            record = invalid or trusted_record(index, raw, parsed, RecordStatus.VALID)
            try:
                self.hooks.after_validate(record, context)
            except Exception as exc:
                return _hook_failed("after_validate", index, raw, record.parsed, exc)
        return parsed if invalid is None else invalid


def _handed_on(
    hook: BeforeValidate | BeforeProcess,
    record: dict[str, Any],
    context: ProcessingContext,
    name: str,
) -> dict[str, Any]:
    """What a before hook hands on: its own copy of ``record``, or the dict it returns."""
    mine = copy.deepcopy(record)
    changed = hook(mine, context)
    if changed is None:
        return mine
    if not isinstance(changed, dict):
        raise TypeError(f"{name} must return a dict or None, got {type(changed).__name__}")
    return changed


def _hook_failed(
    name: str, index: int, raw: dict[str, Any], parsed: dict[str, Any], exc: Exception
) -> ProcessedRecord:
    # Before the processor ran: no retry count, as the TypeScript core leaves it.
    logger.debug("%s failed for record %d: %s", name, index, exc)
    return failed_record(index, raw, parsed, exc, None)
