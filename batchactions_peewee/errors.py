"""Exceptions raised by batchactions-peewee.

Every error the library raises on purpose derives from :class:`BatchActionsError`, so
``except BatchActionsError`` catches them all. Bad input is rejected with one of these
before anything is written.
"""

from __future__ import annotations


class BatchActionsError(Exception):
    """Base class of every error raised by batchactions-peewee."""


class InvalidInputError(BatchActionsError, ValueError):
    """An argument cannot be stored as given (wrong type, size or shape)."""


class InvalidIdentifierError(InvalidInputError):
    """A job, batch or worker id is empty or longer than its column allows."""


class InvalidValueError(InvalidInputError):
    """A value has no exact JSON form: NaN, Infinity, bytes, sets, lone surrogates, ..."""


class InvalidStatusError(InvalidInputError):
    """A status is not one of the known job, batch or record statuses."""


class InvalidTablePrefixError(InvalidInputError):
    """A ``table_prefix`` holds characters other than ASCII letters, digits and underscore."""


class DuplicateRecordError(InvalidInputError):
    """The same record index appears twice in one bulk write."""


class JobNotFoundError(BatchActionsError, LookupError):
    """The job does not exist in the store."""


class JobExistsError(BatchActionsError):
    """A job with this id already exists."""


class InvalidTransitionError(BatchActionsError):
    """A job status change that the lifecycle does not allow."""


class SchemaMismatchError(BatchActionsError):
    """A table with one of our names exists but does not have our columns."""


class StorageError(BatchActionsError):
    """The database failed in a way that retrying did not fix."""
