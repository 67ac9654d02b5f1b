"""How the commands print: JSON, aligned columns, the table of jobs, times and durations,
and the progress bar drawn on stderr."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ..model import JobStatus
from ..reports import Figures


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def print_rows(rows: Sequence[Sequence[object]], out: TextIO | None = None) -> None:
    """Rows as aligned columns; a column of numbers (below its first row) is right-aligned."""
    out = out or sys.stdout
    for line in table_lines(rows):
        print(line, file=out)


def table_lines(rows: Sequence[Sequence[object]]) -> list[str]:
    """The lines ``print_rows`` prints."""
    cells = [[str(c) for c in row] for row in rows]
    columns = max(len(row) for row in rows)
    widths = [
        max((len(row[i]) for row in cells if i < len(row)), default=0) for i in range(columns)
    ]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows[1:] if i < len(row))
        for i in range(columns)
    ]
    lines = []
    for row in cells:
        parts = [
            c.rjust(widths[i]) if numeric[i] else c.ljust(widths[i]) for i, c in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return lines


def jobs_table(listed: Sequence[dict[str, Any]]) -> list[list[object]]:
    """The rows of the ``jobs`` table, its header first, from ``jobs_report``."""
    header = ["job", "status", "records", "done", "invalid", "failed", "started", "source"]
    rows: list[list[object]] = [[*header]]
    for j in listed:
        preparing = j["status"] == JobStatus.CREATED.value
        rows.append(
            [
                j["jobId"],
                j["status"],
                j["writtenRecords"] if preparing else j["totalRecords"],
                "preparing" if preparing else f"{j['percentage']}%",
                j["invalidRecords"],
                j["failedRecords"],
                when(j["startedAt"]),
                j["source"] or "",
            ]
        )
    return rows


#: Column names ``print_columns`` shows before "... and N more".
SHOWN_COLUMNS = 12


def print_columns(columns: Sequence[str] | None) -> None:
    """The columns a CSV header gave, on one line of stderr (nothing for JSON Lines)."""
    if columns is None:
        return
    shown = ", ".join(columns[:SHOWN_COLUMNS])
    more = len(columns) - SHOWN_COLUMNS
    print(f"columns: {shown}" + (f" ... and {more} more" if more > 0 else ""), file=sys.stderr)


def when(ms: int | None) -> str:
    """Epoch ms as local time, or ``-``."""
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def duration(ms: float) -> str:
    """``12.3 s`` under a minute, else ``m:ss`` or ``h:mm:ss``."""
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def bar(percentage: int, width: int) -> str:
    """``[#####...............]``: ``width`` cells, filled to ``percentage``."""
    filled = width * percentage // 100
    return f"[{'#' * filled}{'.' * (width - filled)}]"


class ProgressBar:
    """One line on stderr, redrawn in place: records done and failed, rate and ETA.

    Draws nothing unless ``enabled`` (stderr is a terminal and ``--no-progress`` not given).
    """

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._start: tuple[float, int] | None = None
        self._drawn = False

    def update(self, figures: Figures) -> None:
        if not self.enabled:
            return
        done = figures.done
        now = time.monotonic()
        if self._start is None:
            self._start = (now, done)
        started, done_before = self._start
        rate = (done - done_before) / (now - started) if now > started else 0.0
        left = figures.pending
        eta = duration(left / rate * 1000) if rate > 0 and left > 0 else "-"
        width = shutil.get_terminal_size((80, 24)).columns
        text = (
            f" {figures.percentage:3d}%  {done}/{figures.total} records, "
            f"{figures.invalid} invalid, {figures.failed} failed  {rate:.0f}/s  ETA {eta}"
        )
        # Fixed width, so the line does not jitter; cut to the terminal's width.
        line = bar(figures.percentage, 20) + text
        self.stream.write("\r" + line[: width - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def note(self, text: str) -> None:
        """A status line in place of the bar (e.g. while reading the file)."""
        if self.enabled:
            width = shutil.get_terminal_size((80, 24)).columns
            self.stream.write("\r" + text[: width - 1] + "\x1b[K")
            self.stream.flush()
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False


def progress_bar(args: argparse.Namespace) -> ProgressBar:
    """The bar, enabled when stderr is a terminal and ``--no-progress`` is not given."""
    return ProgressBar(enabled=sys.stderr.isatty() and not getattr(args, "no_progress", False))
