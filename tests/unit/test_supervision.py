"""engine.supervision: the pool's worker ids, and the parent watch that ends an orphaned
worker where ``PR_SET_PDEATHSIG`` is not to be had."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from batchactions_peewee.engine.supervision import pool_worker_ids
from batchactions_peewee.errors import InvalidIdentifierError


def test_pool_worker_ids() -> None:
    assert pool_worker_ids(None, 2) == [None, None]
    assert pool_worker_ids("pod-a", 1) == ["pod-a"]
    assert pool_worker_ids("pod-a", 3) == ["pod-a-1", "pod-a-2", "pod-a-3"]
    assert pool_worker_ids("x" * 126, 9) == [f"{'x' * 126}-{n}" for n in range(1, 10)]


@pytest.mark.parametrize(("worker_id", "count"), [("", 1), ("x" * 129, 1), ("x" * 127, 2)])
def test_pool_worker_ids_refuses_what_cannot_name_the_workers(worker_id: str, count: int) -> None:
    with pytest.raises(InvalidIdentifierError, match="worker id"):
        pool_worker_ids(worker_id, count)


#: A parent that starts a child and exits at once; the child, without PR_SET_PDEATHSIG,
#: must notice through the watch alone and write ORPHANED.
ORPHAN = """
import os, pathlib, subprocess, sys, time
if sys.argv[1] == "parent":
    me = str(os.getpid())
    subprocess.Popen([sys.executable, "-c", sys.argv[3], "child", sys.argv[2], me])
else:
    from batchactions_peewee.engine import supervision
    supervision._set_pdeathsig = lambda signum: False
    orphaned = lambda: pathlib.Path(sys.argv[2], "ORPHANED").touch()
    supervision.die_with_parent(int(sys.argv[3]), orphaned)
    time.sleep(60)
"""


@pytest.mark.slow
def test_the_parent_watch_alone_tells_an_orphan(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", ORPHAN, "parent", str(tmp_path), ORPHAN], check=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "ORPHANED").exists():
        assert time.monotonic() < deadline, "the orphan never noticed"
        time.sleep(0.05)
