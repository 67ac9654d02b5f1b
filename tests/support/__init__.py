"""Helpers the tests share; nothing here is collected as a test.

Run from the repository root, a child process finds them as ``tests.support...``: see
:mod:`tests.support.child`.
"""

from __future__ import annotations

from pathlib import Path

#: The repository root: the working directory of the tests' child processes.
REPO = Path(__file__).resolve().parents[2]
