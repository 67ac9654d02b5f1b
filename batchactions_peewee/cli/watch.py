"""``status JOB --watch`` and ``jobs --watch``: what ``status`` (the table of ``jobs``) shows,
read again every ``--interval`` seconds until the job ends (``jobs``: until Ctrl-C).

Where stdout goes decides the form: a terminal gets a view redrawn in place (ANSI escapes,
the cursor hidden meanwhile, each frame cut to the terminal's size); a pipe or a file gets a
plain line each time something changed; ``--json`` gets one JSON value per line per refresh
(JSON Lines). A refresh reads what one ``status`` (``jobs``) reads, no more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from types import FrameType
from typing import Any, TextIO

from ..model import JobState, JobStatus
from ..reports import jobs_report, status_report
from ..store import PeeweeStateStore
from .common import DEFAULT_LEASE_TIMEOUT_MS, database_url, find_job, hint, usage_error
from .render import bar, duration, jobs_table, table_lines

DEFAULT_INTERVAL_S = 1.0
#: ``status --watch``'s exit code by the status the job ended in: non-zero unless it
#: completed, so that ``status JOB --watch && next-step`` goes on only after a success.
EXIT_CODES = {JobStatus.COMPLETED: 0, JobStatus.FAILED: 1, JobStatus.ABORTED: 1}
#: Ctrl-C, as for every command.
INTERRUPTED = 130

HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
CLEAR_LINE, CLEAR_BELOW, CLEAR_SCREEN = "\x1b[K", "\x1b[J", "\x1b[H\x1b[2J"


def watch_requested(args: argparse.Namespace) -> bool:
    """Whether ``--watch`` was given; ``--interval`` without it is a usage error."""
    if args.interval is not None and not args.watch:
        raise usage_error("--interval goes with --watch")
    return bool(args.watch)


def watch_status(args: argparse.Namespace, store: PeeweeStateStore, job: JobState) -> int:
    """``status JOB --watch``: the job's report every ``--interval`` seconds until it ends.
    Returns 0 if it completed, 1 if it failed or was aborted, 130 on Ctrl-C."""
    url = database_url(args)
    output = Output(args, sys.stdout)
    pace = Pace()
    given: JobState | None = job

    def refresh() -> int | None:
        nonlocal given
        current = given or find_job(store, job.id, url)  # the first refresh has it already
        given = None
        report = status_report(store, current, args.lease_timeout)
        pace.add(report["totalRecords"] - report["pendingRecords"])
        ended = EXIT_CODES.get(current.status)
        output.show(
            report,
            lambda width: status_frame(args, report, pace, ended is not None, width),
            lambda: [status_line(report, pace)],
            final=ended is not None,
        )
        return ended

    return output.run(refresh, interval(args))


def watch_jobs(args: argparse.Namespace, store: PeeweeStateStore) -> int:
    """``jobs --watch``: the recent jobs every ``--interval`` seconds; 130 on Ctrl-C."""
    output = Output(args, sys.stdout)

    def refresh() -> None:
        listed = jobs_report(store, args.status, args.limit)
        output.show(
            listed,
            lambda width: jobs_frame(args, listed),
            lambda: [job_line(j) for j in listed] or [Line("", "no jobs", "no jobs")],
        )

    return output.run(refresh, interval(args))


def interval(args: argparse.Namespace) -> float:
    return float(args.interval) if args.interval is not None else DEFAULT_INTERVAL_S


def clock() -> str:
    return time.strftime("%H:%M:%S")


# -- the three forms ------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """A plain line about ``key`` (a job id), printed again only when its ``state`` (the
    line less what changes with time alone: rate, ETA, elapsed) has changed."""

    key: str
    state: str
    text: str


class Output:
    """Where the refreshes go: a terminal (redrawn in place), plain lines, or JSON Lines."""

    def __init__(self, args: argparse.Namespace, stream: TextIO) -> None:
        self.stream = stream
        self.json = bool(args.json)
        self.screen = Screen(stream) if not self.json and is_terminal(stream) else None
        self._printed: dict[str, str] = {}

    def show(
        self,
        value: Any,
        frame: Callable[[int], list[str]],
        lines: Callable[[], list[Line]],
        final: bool = False,
    ) -> None:
        """``value`` as JSON, or its ``frame`` for a terminal of that width (the ``final``
        one of the watch), or its ``lines``."""
        if self.json:
            self.stream.write(json.dumps(value, ensure_ascii=False) + "\n")
        elif self.screen is not None:
            self.screen.draw(frame, final)
        else:
            for line in lines():
                if self._printed.get(line.key) != line.state:
                    self.stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line.text}\n")
                    self._printed[line.key] = line.state
        self.stream.flush()  # a pipe is block-buffered: the reader wants each refresh now

    def run(self, refresh: Callable[[], int | None], every: float) -> int:
        """Call ``refresh`` every ``every`` seconds until it returns an exit code, or Ctrl-C."""
        with self.screen.active() if self.screen is not None else nullcontext():
            try:
                deadline = time.monotonic()
                while (code := refresh()) is None:
                    now = time.monotonic()
                    deadline = max(deadline + every, now)  # a slow refresh is not caught up
                    time.sleep(deadline - now)
                return code
            except KeyboardInterrupt:
                if self.screen is not None:
                    self.stream.write("\n")  # the prompt goes below the ^C the terminal echoed
                return INTERRUPTED


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that understands ANSI escapes."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


class Screen:
    """A view redrawn in place on a terminal: each frame is cut to the terminal's size and
    written at once over the last one (no clearing in between, so nothing flickers)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._height = 0  # lines of the last frame; the cursor waits on the line below
        self._size: os.terminal_size | None = None

    def draw(self, frame: Callable[[int], list[str]], final: bool = False) -> None:
        """Draw ``frame(width)`` over the last frame. The ``final`` one is not cut: nothing
        is drawn over it, so it may wrap and scroll (a command hint stays whole)."""
        size = shutil.get_terminal_size()
        if self._size is not None and size != self._size:
            # A narrower terminal rewraps the last frame, so moving up its height would miss.
            head = CLEAR_SCREEN
        else:
            head = f"\r\x1b[{self._height}A" if self._height else "\r"
        lines = frame(size.columns)
        lines = [cut(line) for line in lines] if final else fit(lines, size.columns, size.lines)
        body = "".join(f"{line}{CLEAR_LINE}\n" for line in lines)
        self.stream.write(head + body + CLEAR_BELOW)
        self.stream.flush()
        self._height, self._size = len(lines), size

    @contextmanager
    def active(self) -> Iterator[None]:
        """The cursor hidden while the block runs, and shown again however it ends: Ctrl-C,
        an error, SIGTERM; and while the process is suspended (Ctrl-Z)."""
        self._write(HIDE_CURSOR)
        saved = _handle_signals({"SIGTERM": _terminate, "SIGTSTP": self._suspend})
        try:
            yield
        finally:
            _handle_signals(saved)
            self._write(SHOW_CURSOR)

    def _suspend(self, signum: int, frame: FrameType | None) -> None:
        self._write(SHOW_CURSOR)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # stops here until resumed (fg)
        signal.signal(signum, self._suspend)
        self._height = 0  # the shell wrote below the last frame: draw the next one afresh
        self._write(HIDE_CURSOR)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through ``finally``, which shows the cursor


def _handle_signals(handlers: dict[str, Any]) -> dict[str, Any]:
    """Install ``handlers`` by signal name where this platform and thread allow it, except
    over an ignored signal; return the handlers they replace."""
    saved: dict[str, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return saved
    for name, handler in handlers.items():
        number = getattr(signal, name, None)
        if number is None or signal.getsignal(number) == signal.SIG_IGN:
            continue  # not on this platform, or ignored on purpose by whoever started us
        # None: the handler was not set from Python; put the default back then.
        saved[name] = signal.signal(number, signal.SIG_DFL if handler is None else handler)
    return saved


def fit(lines: Sequence[str], columns: int, rows: int) -> list[str]:
    """``lines`` cut to a terminal of that size: each line to ``columns - 1`` cells (the last
    column wraps on some terminals), and at most ``rows - 1`` lines (the cursor waits on the
    last row), the last shown saying how many more there are."""
    width = max(1, columns - 1)
    shown = list(lines)
    most = max(1, rows - 1)
    if len(shown) > most:
        shown = [*shown[: most - 1], f"... and {len(shown) - most + 1} more lines"]
    return [cut(line, width) for line in shown]


def cut(text: str, width: float = math.inf) -> str:
    """``text`` in at most ``width`` terminal cells, control characters shown as ``?``."""
    kept: list[str] = []
    used = 0
    for char in text:
        char = char if char.isprintable() else "?"
        cells = 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
        if used + cells > width:
            break
        kept.append(char)
        used += cells
    return "".join(kept)


# -- status JOB --watch ---------------------------------------------------------------------

#: The pace of a watched job is measured over the refreshes of about this many seconds.
PACE_WINDOW_S = 10.0


class Pace:
    """Records per second over the last refreshes, as the watch saw them: unlike the rate
    since the job started, it leaves out the time before the workers began, or paused."""

    def __init__(self) -> None:
        self._seen: deque[tuple[float, int]] = deque()

    def add(self, done: int) -> None:
        now = time.monotonic()
        self._seen.append((now, done))
        while len(self._seen) > 2 and self._seen[1][0] <= now - PACE_WINDOW_S:
            self._seen.popleft()

    def per_second(self) -> float | None:
        """None until two refreshes have been seen."""
        (start, before), (end, done) = self._seen[0], self._seen[-1]
        return (done - before) / (end - start) if end > start else None


def status_frame(
    args: argparse.Namespace, report: dict[str, Any], pace: Pace, ended: bool, width: int
) -> list[str]:
    """The terminal view of ``status --watch``: a heading, the job's figures with a progress
    bar, and the workers holding leases."""
    status = report["status"]
    heading = f"the job is {status}" if ended else f"every {interval(args):g} s, Ctrl-C to stop"
    rows: list[list[object]] = [
        ["job", report["jobId"]],
        ["status", status],
        ["source", report["source"] or "-"],
    ]
    if status == JobStatus.CREATED.value:
        rows.append(["written", f"{report['writtenRecords']} records so far"])
        note = "preparing: no worker takes a batch of it before its preparation finishes"
        return [f"{heading}  {clock()}", "", *table_lines(rows), "", note]
    rows += _figure_rows(args, report, pace, width)
    lines = [f"{heading}  {clock()}", "", *table_lines(rows), *_lease_lines(args, report)]
    if ended and report["failedRecords"] + report["invalidRecords"]:
        export = hint(args, "failed", report["jobId"], "--output", "failed.csv")
        lines += ["", f"failed records: `{export}`"]
    return lines


def _figure_rows(
    args: argparse.Namespace, report: dict[str, Any], pace: Pace, width: int
) -> list[list[object]]:
    done = report["totalRecords"] - report["pendingRecords"]
    # The bar grows with the terminal, between 10 and 40 cells, beside its labels.
    progress = bar(report["percentage"], max(10, min(40, width - 42)))
    batches = report["batches"]
    return [
        [
            "progress",
            f"{progress} {report['percentage']:3d}%  {done} of {report['totalRecords']} records",
        ],
        [
            "records",
            f"{report['processedRecords']} processed, {report['invalidRecords']} invalid, "
            f"{report['failedRecords']} failed, {report['pendingRecords']} pending",
        ],
        ["batches", ", ".join(f"{n} {s}" for s, n in sorted(batches.items())) or "none"],
        ["rate", _rate(args, report, pace)],
        ["elapsed" if report["completedAt"] is None else "took", duration(report["elapsedMs"])],
    ]


def _rate(args: argparse.Namespace, report: dict[str, Any], pace: Pace) -> str:
    if report["status"] == JobStatus.PAUSED.value:
        return f"paused: the workers wait; `{hint(args, 'resume', report['jobId'])}`"
    overall = report["recordsPerSecond"]
    since_start = f"{overall:g} records/s" if overall is not None else "-"
    if report["completedAt"] is not None:
        return since_start
    now, eta = _pace_eta(report, pace)
    rate = since_start if now is None else f"{now:.1f} records/s now, {overall or 0:g} overall"
    return rate + (f", about {duration(eta)} left" if eta else "")


def _pace_eta(report: dict[str, Any], pace: Pace) -> tuple[float | None, int | None]:
    """The pace the watch saw and the time left at it (else the report's estimate)."""
    now = pace.per_second()
    if now is None:
        return None, report["estimatedRemainingMs"]
    pending = report["pendingRecords"]
    return now, int(pending / now * 1000) if now > 0 and pending else None


def _lease_lines(args: argparse.Namespace, report: dict[str, Any]) -> list[str]:
    leases = report["leases"]
    if not leases:
        return []
    rows: list[list[object]] = [["worker", "batch", "held for", ""]]
    for lease in leases:
        held = duration(lease["heldMs"]) if lease["heldMs"] is not None else "-"
        rows.append(
            [lease["workerId"], lease["batchIndex"], held, "stale" if lease["stale"] else ""]
        )
    lines = ["", *table_lines(rows)]
    if any(lease["stale"] for lease in leases):
        reclaim = ["reclaim", report["jobId"]]
        if args.lease_timeout != DEFAULT_LEASE_TIMEOUT_MS:
            reclaim += ["--timeout", str(args.lease_timeout)]
        lines.append(f"stale leases: `{hint(args, *reclaim)}` gives their batches back")
    return lines


def status_line(report: dict[str, Any], pace: Pace) -> Line:
    """The plain line of ``status --watch``."""
    status, job_id = report["status"], report["jobId"]
    if status == JobStatus.CREATED.value:
        state = f"{status} preparing, {report['writtenRecords']} records written so far"
        return Line(job_id, state, state)
    total = report["totalRecords"]
    batches = report["batches"]
    finished = batches.get("COMPLETED", 0) + batches.get("FAILED", 0)
    leases = report["leases"]
    stale = sum(1 for lease in leases if lease["stale"])
    state = (
        f"{status} {report['percentage']}% {total - report['pendingRecords']}/{total} records "
        f"({report['invalidRecords']} invalid, {report['failedRecords']} failed), "
        f"{finished}/{sum(batches.values())} batches done, "
        f"{len(leases)} lease{'' if len(leases) == 1 else 's'}"
        + (f" ({stale} stale)" if stale else "")
    )
    if report["completedAt"] is not None:
        overall = report["recordsPerSecond"]
        timing = f", {overall:g} records/s" if overall is not None else ""
        timing += f", took {duration(report['elapsedMs'])}"
    else:
        now, eta = _pace_eta(report, pace)
        timing = f", {now:.1f} records/s" if now is not None else ""
        timing += f", ETA {duration(eta)}" if eta else ""
    return Line(job_id, state, state + timing)


# -- jobs --watch ---------------------------------------------------------------------------


def jobs_frame(args: argparse.Namespace, listed: list[dict[str, Any]]) -> list[str]:
    """The terminal view of ``jobs --watch``: a heading and the table of ``jobs``."""
    which = f"{args.status} jobs" if args.status else "recent jobs"
    heading = f"{which}, every {interval(args):g} s, Ctrl-C to stop  {clock()}"
    return [heading, "", *(table_lines(jobs_table(listed)) if listed else ["no jobs"])]


def job_line(job: dict[str, Any]) -> Line:
    """The plain line of one job in ``jobs --watch``."""
    if job["status"] == JobStatus.CREATED.value:
        text = f"CREATED preparing, {job['writtenRecords']} records written so far"
    else:
        text = (
            f"{job['status']} {job['percentage']}% of {job['totalRecords']} records "
            f"({job['invalidRecords']} invalid, {job['failedRecords']} failed)"
        )
    return Line(job["jobId"], text, f"{job['jobId']} {text}")
