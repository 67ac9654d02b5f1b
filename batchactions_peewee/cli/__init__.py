"""The command line: ``batchactions-peewee`` (also ``python -m batchactions_peewee``).

Table commands (``schema_commands``): ``init``, ``sql``, ``migrate``. Job commands
(``job_commands``): ``prepare FILE`` splits a CSV or JSON Lines file into a distributed
job, ``work JOB_ID`` joins a job as a worker (on any machine that reaches the database),
and ``run FILE`` does both on one machine with several worker processes and a progress
bar. Report commands (``report_commands``): ``status``, ``failed``, ``reclaim``, ``jobs``.

Every error the user can cause is one line on stderr and a non-zero exit code: 2 for a
usage error (a bad option, an unknown database scheme, a processor that cannot be
imported), 1 for anything else (a missing file, an unknown job, an unreachable database).
Passwords in database URLs are never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import peewee as pw

from ..errors import BatchActionsError
from ..store.schema import ddl_statements
from .common import (
    PROG,
    URL_ENV,
    CliError,
    configure_logging,
    database_url,
    first_line,
    open_database,
    redact,
    scrub,
)
from .parser import build_parser


def _fail(message: str, exit_code: int, url: str | None) -> int:
    print(f"{PROG}: error: {scrub(message, url)}", file=sys.stderr)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    args = build_parser().parse_args(argv)
    args.verbose = getattr(args, "verbose", False)
    configure_logging(args.verbose)
    url = database_url(args)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return _fail(str(exc), exc.exit_code, url)
    except BatchActionsError as exc:  # SourceError, JobNotFoundError, ...
        return _fail(first_line(exc), 1, url)
    except pw.PeeweeException as exc:
        return _fail(f"database error: {first_line(exc)}", 1, url)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(first_line(exc), 1, url)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if args.verbose:
            raise
        return _fail(
            f"unexpected {type(exc).__name__}: {first_line(exc)} (--verbose shows where)",
            1,
            url,
        )


__all__ = ["URL_ENV", "build_parser", "ddl_statements", "main", "open_database", "redact"]
