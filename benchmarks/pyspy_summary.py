"""Summarize py-spy's raw (collapsed) output below one function: where its samples go.

    /work/venv/bin/python benchmarks/pyspy_summary.py FILE --root NAME [--root NAME2 ...]

FILE is what `py-spy record -f raw -o FILE` writes: one line per unique stack, outermost
frame first, frames separated by `;`, then a space and the stack's sample count. A frame is
`function (file.py:line)` or `function (file.py)`; with --subprocesses the first frames
are `process PID:"command line"` (the command line may itself contain `;`).

For each --root, one section: the samples of the stacks that contain a frame whose function
name equals NAME exactly (so `_e2e_work` does not match `_raw_e2e_work`), in how many
processes; then the top 30 functions by inclusive share of those samples (each function
counted once per stack, frames from the outermost NAME frame down), then the top 25 by
leaf (self) share. Functions are keyed by name and file without line numbers and shown with
the file's basename. Process and thread frames are not functions and are not counted.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

INCLUSIVE_TOP = 30
LEAF_TOP = 25

FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
PROCESS = re.compile(r'^process (?P<pid>\d+):"')


@dataclass(frozen=True)
class Function:
    """A function as the summary keys it: name and file, no line number."""

    name: str
    file: str

    @property
    def label(self) -> str:
        return f"{self.name} ({PurePosixPath(self.file).name})"


@dataclass(frozen=True)
class Stack:
    """One line of the raw file: its process (if recorded), its functions, its samples."""

    process: str
    functions: tuple[Function, ...]
    samples: int


def split_frames(text: str) -> Iterator[str]:
    """The `;`-separated frames, re-joining a quoted process command line cut at a `;`."""
    pending: list[str] = []
    for piece in text.split(";"):
        pending.append(piece)
        joined = ";".join(pending)
        if PROCESS.match(joined) and joined.count('"') % 2 == 1:
            continue
        pending.clear()
        yield joined
    if pending:
        yield ";".join(pending)


def parse_line(line: str) -> Stack | None:
    """One stack, or None for a blank or malformed line."""
    text, _, count = line.rstrip("\n").rpartition(" ")
    if not text or not count.isdigit():
        return None
    process = "?"
    functions: list[Function] = []
    for frame in split_frames(text):
        match = FRAME.match(frame)
        if match is not None:
            functions.append(Function(match["function"], match["file"]))
        elif (pid := PROCESS.match(frame)) is not None:
            # With --subprocesses the innermost process frame is the process sampled.
            process = pid["pid"]
    return Stack(process, tuple(functions), int(count))


def read_stacks(lines: Iterable[str]) -> list[Stack]:
    return [stack for line in lines if (stack := parse_line(line)) is not None]


def below_root(stack: Stack, root: str) -> tuple[Function, ...] | None:
    """The stack's functions from its outermost `root` frame down, or None without one."""
    for i, function in enumerate(stack.functions):
        if function.name == root:
            return stack.functions[i:]
    return None


def labels(functions: Iterable[Function]) -> dict[Function, str]:
    """Basename labels, the full file where two functions would print the same."""
    functions = list(functions)
    seen = Counter(f.label for f in functions)
    return {f: f.label if seen[f.label] == 1 else f"{f.name} ({f.file})" for f in functions}


def summarize(stacks: Sequence[Stack], root: str) -> list[str]:
    """The report lines of one root."""
    total = 0
    processes: set[str] = set()
    inclusive: Counter[Function] = Counter()
    leaf: Counter[Function] = Counter()
    for stack in stacks:
        functions = below_root(stack, root)
        if functions is None:
            continue
        total += stack.samples
        processes.add(stack.process)
        for function in set(functions):
            inclusive[function] += stack.samples
        leaf[functions[-1]] += stack.samples
    out = [f"== root {root}: {total:,} samples in {len(processes)} processes"]
    if total == 0:
        return out
    names = labels(list(inclusive))
    out.append("")
    out.append(f"-- top {INCLUSIVE_TOP} inclusive (share of the root's samples)")
    out += [f"{100 * n / total:5.1f}%  {names[f]}" for f, n in ranked(inclusive, INCLUSIVE_TOP)]
    out.append("")
    out.append(f"-- top {LEAF_TOP} leaf (self)")
    out += [f"{100 * n / total:5.1f}%  {names[f]}" for f, n in ranked(leaf, LEAF_TOP)]
    return out


def ranked(counts: Counter[Function], top: int) -> list[tuple[Function, int]]:
    """Highest count first; ties by label so the output is stable."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0].label, item[0].file))[:top]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", help="py-spy record -f raw output")
    parser.add_argument(
        "--root", action="append", required=True, help="function name (exact); repeatable"
    )
    args = parser.parse_args(argv)
    with open(args.file, encoding="utf-8", errors="replace") as f:
        stacks = read_stacks(f)
    sections = [summarize(stacks, root) for root in args.root]
    print("\n\n".join("\n".join(section) for section in sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
