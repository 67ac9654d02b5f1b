"""Exceptions raised by batchactions-peewee.

Every error the library raises on purpose derives from :class:`BatchActionsError`, so
``except BatchActionsError`` catches them all. Bad input is rejected with one of these
before anything is written.
"""

from __future__ import annotations

import peewee as pw


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


class JobAbortedError(BatchActionsError):
    """The job was aborted, or deleted, while ``prepare_job`` was still writing it: the
    job stays as the abort left it, and nothing makes it claimable."""


class SchemaMismatchError(BatchActionsError):
    """A table with one of our names exists but does not have our columns."""


class StoreUnavailable(BatchActionsError, pw.OperationalError):
    """The database failed in a way that trying again later may cure: unreachable, gone,
    or still locked after the store's own bounded retries. ``__cause__`` is the driver's
    error; it is a ``peewee.OperationalError`` too, so code that caught the driver's error
    still catches it. Errors of a statement itself (a constraint, a syntax error, bad data)
    are raised as the driver raised them."""


class StatementTooLarge(BatchActionsError, pw.OperationalError):
    """The database refuses a statement this large (MySQL's and MariaDB's
    ``max_allowed_packet``). Trying again cannot help, so it is not retried: raise the
    server's limit, or write fewer records at once. A ``peewee.OperationalError`` too, as
    the driver's error was."""


class SourceError(BatchActionsError):
    """An input file cannot be read at all: missing, unreadable, not text, or a CSV file
    without a header."""
