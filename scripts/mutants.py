# ruff: noqa: E501 - the mutants quote source lines as they are
"""Check that the fencing tests catch the bugs they were written for.

Each mutant below is a plausible one-line bug in the coordination code. The script applies
each in turn to a temporary copy of HEAD (``git worktree``), runs tests/ against it, and
reports the tests that failed; a mutant that no test catches exits non-zero.

    python scripts/mutants.py            # SQLite and memory; set the server URLs for more
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
#: (name, file, text, mutated text[, second file, text, mutated text]).
MUTANTS: list[tuple[str, str, str, str, str | None, str | None, str | None]] = [
    (
        "A: take without version",
        "batchactions_peewee/store/statements.py",
        '"WHERE {b.id} = {p} AND {b.version} = {p} AND {b.status} = {p}"\n)\n\n#: Did TAKE land?',
        '"WHERE {b.id} = {p} AND {b.status} = {p}"\n)\n\n#: Did TAKE land?',
        "batchactions_peewee/store/coordination.py",
        "params = (_PROCESSING, worker_id, now, batch_id, version, _PENDING)",
        "params = (_PROCESSING, worker_id, now, batch_id, _PENDING)",
    ),
    (
        "B: finish without worker id",
        "batchactions_peewee/store/statements.py",
        '"{b.version} = {b.version} + 1 "\n    "WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.workerId} = {p} AND {b.version} = {p} "\n    "AND {b.status} = {p}"\n)\n\n#: Did FINISH',
        '"{b.version} = {b.version} + 1 "\n    "WHERE {b.id} = {p} AND {b.jobId} = {p} AND {b.version} = {p} "\n    "AND {b.status} = {p}"\n)\n\n#: Did FINISH',
        "batchactions_peewee/store/coordination.py",
        "            r.job_id,\n            r.worker_id,\n            r.version,\n            _PROCESSING,\n        )",
        "            r.job_id,\n            r.version,\n            _PROCESSING,\n        )",
    ),
    (
        "B: memory held without worker id",
        "batchactions_peewee/memory.py",
        "or b.worker_id != worker_id\n",
        "\n",
        None,
        None,
        None,
    ),
    (
        "C: reclaim without version bump",
        "batchactions_peewee/store/statements.py",
        '''RECLAIM = (
    "UPDATE {b} SET {b.status} = 'PENDING', {b.workerId} = NULL, {b.claimedAt} = NULL, "
    "{b.version} = {b.version} + 1 "''',
        '''RECLAIM = (
    "UPDATE {b} SET {b.status} = 'PENDING', {b.workerId} = NULL, {b.claimedAt} = NULL "''',
        None,
        None,
        None,
    ),
    (
        "C: memory release without version bump",
        "batchactions_peewee/memory.py",
        "        b.status, b.worker_id, b.claimed_at = BatchStatus.PENDING.value, None, None\n        b.version += 1\n",
        "        b.status, b.worker_id, b.claimed_at = BatchStatus.PENDING.value, None, None\n",
        None,
        None,
        None,
    ),
    (
        "D: no release after a lost lease",
        "batchactions_peewee/engine/worker.py",
        "            if not written:\n                self._release(res)",
        "            if not written:\n                pass",
        None,
        None,
        None,
    ),
]


def run_tests(root: pathlib.Path) -> tuple[int, list[str]]:
    env = dict(os.environ, PYTHONPATH=str(root))
    # The statement snapshots catch any edit of a statement: leave them out, so that what
    # is counted is a test of behaviour failing.
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]
    command += ["-k", "not render_as_their_snapshot"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    failed = [
        line.split(" - ")[0] for line in done.stdout.splitlines() if line.startswith("FAILED")
    ]
    return done.returncode, failed


def main() -> int:
    missed = 0
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch) / "copy"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "-q", str(root), "HEAD"], check=True
        )
        try:
            for name, *edits in MUTANTS:
                originals: dict[pathlib.Path, str] = {}
                for f, a, b in (edits[0:3], edits[3:6]):
                    if f is None or a is None or b is None:
                        continue
                    path = root / f
                    text = path.read_text()
                    assert text.count(a) == 1, f"{name}: the text to mutate is not in {f} once"
                    originals[path] = text
                    path.write_text(text.replace(a, b))
                code, failed = run_tests(root)
                missed += code == 0
                print(f"{name}: {'CAUGHT by ' + ', '.join(failed[:3]) if code else 'MISSED'}")
                for path, text in originals.items():
                    path.write_text(text)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(root)])
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
