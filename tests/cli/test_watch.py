"""``status JOB --watch`` and ``jobs --watch`` as a user sees them: on a terminal (tmux, at a
fixed size), into a pipe (plain lines), as JSON Lines, and their usage errors.

A worker process (``work``) runs the job while the watch looks on, one batch at a time as
the test lets it through a gate, so that what the watch must show is there for as long as
it takes to see it: no timing decides a test. Under CI=true a missing tmux fails the
terminal tests instead of skipping them, as a missing database server does.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from batchactions_peewee import JobConfig, JobState, JobStatus
from batchactions_peewee.cli import URL_ENV
from batchactions_peewee.cli.watch import CLEAR_BELOW, CLEAR_SCREEN, Screen, cut, fit

from ..support.backends import IN_CI
from ..support.cli import TIMEOUT_S, Target, as_json, cli, ok

RECORDS = 150
BATCH_SIZE = 15
INTERVAL = "0.2"

CASE_MODULE = """
import time


def gated(record, context):
    # A batch waits until the test's gate lets that many batches through.
    while int(open("gate").read()) <= context.batch_index:
        time.sleep(0.01)
    if record["n"] % 10 == 9:
        raise RuntimeError("nine")
"""

TMUX = shutil.which("tmux")


def let_through(directory: Path, batches: int) -> None:
    """Let the worker take the job's first ``batches`` batches."""
    (directory / "gate.new").write_text(str(batches))
    os.replace(directory / "gate.new", directory / "gate")  # never read half-written


def prepare(directory: Path, target: Target) -> str:
    """A PROCESSING job of RECORDS records in batches of BATCH_SIZE, that remembers the gated
    processor (the gate closed)."""
    (directory / "watch_case.py").write_text(CASE_MODULE)
    let_through(directory, 0)
    lines = "".join(f'{{"n": {n}}}\n' for n in range(RECORDS))
    (directory / "numbers.jsonl").write_text(lines)
    command = ["prepare", "numbers.jsonl", "--processor", "watch_case:gated", "--json"]
    prepared = as_json(cli(*command, "--batch-size", str(BATCH_SIZE), *target.args, cwd=directory))
    return str(prepared["jobId"])


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (URL_ENV, "TMUX")}


#: The processes a test started, stopped at its end if still running (a worker that a
#: failed test left at a closed gate would wait there for ever).
_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _stop_what_was_started() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.kill()
            process.communicate()


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """The command line in a process of its own, its output in pipes (not a terminal)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchactions_peewee", *args],
        cwd=cwd,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _started.append(process)
    return process


def work(job_id: str, target: Target, cwd: Path) -> subprocess.Popen[str]:
    return start("work", job_id, "--json", *target.args, cwd=cwd)


def worker_ids(worker: subprocess.Popen[str]) -> list[str]:
    out, err = worker.communicate(timeout=TIMEOUT_S)
    assert worker.returncode == 0, err
    return [w["workerId"] for w in json.loads(out)["workers"]]


def first_line(stream: IO[str] | None) -> str:
    assert stream is not None
    line = stream.readline()
    assert line, "the watch printed nothing more"
    return line


def line_with(stream: IO[str] | None, text: str) -> list[str]:
    """The lines read up to the first that holds ``text``, that one included."""
    lines = [first_line(stream)]
    while text not in lines[-1]:
        lines.append(first_line(stream))
    return lines


# -- tmux -----------------------------------------------------------------------------------


@dataclass
class Tmux:
    """One tmux server of our own (a private socket, no user config) with one session."""

    socket: str
    config: Path
    session: str = "watch"

    def __call__(self, *args: str) -> str:
        assert TMUX is not None
        command = [TMUX, "-L", self.socket, "-f", str(self.config), *args]
        done = subprocess.run(
            command, env=environment(), capture_output=True, text=True, timeout=30, check=True
        )
        return done.stdout

    def start(self, *args: str, cwd: Path) -> None:
        """Run the command line in a detached 120x40 pane. A shell stays after it, as at a
        prompt: it says the exit status, and the pane keeps the cursor's state."""
        command = shlex.join([sys.executable, "-m", "batchactions_peewee", *args])
        # A trap, not an ignored SIGINT, so that Ctrl-C still reaches the command.
        script = f'trap : INT; {command}; echo "[exit $?]"; exec sleep 600'
        size = ["-x", "120", "-y", "40"]
        self("new-session", "-d", "-s", self.session, *size, "-c", str(cwd), script)

    def screen(self) -> str:
        """The pane's text, with what scrolled off its top."""
        return self("capture-pane", "-p", "-S", "-", "-t", self.session)

    def pane(self, variable: str) -> str:
        return self("display-message", "-p", "-t", self.session, f"#{{{variable}}}").strip()

    def exit_status(self) -> int | None:
        """The command's exit status once it has exited, else None."""
        found = re.search(r"^\[exit (\d+)\]$", self.screen(), re.MULTILINE)
        return int(found[1]) if found else None

    def wait_for(self, condition: Callable[[str], bool], what: str) -> str:
        """The first screen that meets ``condition`` (a generous deadline)."""
        deadline = time.monotonic() + 60
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            assert time.monotonic() < deadline, f"never saw {what}; the screen:\n{screen}"
            time.sleep(0.05)

    def wait_for_exit(self) -> int:
        deadline = time.monotonic() + 60
        while (status := self.exit_status()) is None:
            assert time.monotonic() < deadline, f"did not exit; the screen:\n{self.screen()}"
            time.sleep(0.05)
        return status


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    """A tmux server of this test's own, killed afterwards."""
    if TMUX is None:
        if IN_CI:
            pytest.fail("CI=true but tmux is not installed: refusing to skip the terminal tests")
        pytest.skip("tmux is not installed: the terminal tests of --watch need it")
    config = tmp_path / "tmux.conf"
    config.write_text("set -g default-shell /bin/sh\nset -g status off\n")
    server = Tmux(f"batchactions-watch-{os.getpid()}-{secrets.token_hex(4)}", config)
    try:
        yield server
    finally:
        found = subprocess.run(
            [TMUX, "-L", server.socket, "display-message", "-p", "#{socket_path}"],
            capture_output=True,
            text=True,
            check=False,
        )
        subprocess.run([TMUX, "-L", server.socket, "kill-server"], capture_output=True, check=False)
        if found.returncode == 0 and found.stdout.strip():
            Path(found.stdout.strip()).unlink(missing_ok=True)  # tmux leaves it behind


def shows(text: str) -> Callable[[str], bool]:
    return lambda screen: text in screen


def test_status_watch_on_a_terminal_shows_the_job_moving_and_ends_with_it(
    tmp_path: Path, sqlite_target: Target, tmux: Tmux
) -> None:
    job_id = prepare(tmp_path, sqlite_target)
    tmux.start(
        "status", job_id, "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path
    )
    before = tmux.wait_for(lambda s: f"0 of {RECORDS} records" in s, "the job before work")
    assert re.search(r"^status +PROCESSING$", before, re.MULTILINE)
    assert "every 0.2 s, Ctrl-C to stop" in before
    assert tmux.pane("cursor_flag") == "0", "the cursor is hidden while the view is drawn"
    worker = work(job_id, sqlite_target, tmp_path)
    lease = re.compile(r"^(\S+) +(\d+)  \d+\.\d s$", re.MULTILINE)
    held = tmux.wait_for(lambda s: bool(lease.search(s)), "the worker's lease on batch 0")
    found = lease.search(held)
    assert found and found[2] == "0"
    holder = found[1]
    assert re.search(r"^worker +batch +held for$", held, re.MULTILINE)
    seen = [held]
    for batches in (1, 2):  # two views with different counts
        let_through(tmp_path, batches)
        done = batches * BATCH_SIZE
        failed = sum(1 for n in range(done) if n % 10 == 9)
        shown = f"{done * 100 // RECORDS}%  {done} of {RECORDS} records"
        seen.append(tmux.wait_for(shows(shown), shown))
        assert f"{done - failed} processed, 0 invalid, {failed} failed" in seen[-1]
    let_through(tmp_path, RECORDS // BATCH_SIZE)
    assert tmux.wait_for_exit() == 0
    assert worker_ids(worker) == [holder], "the lease shown is the worker's"

    final = tmux.screen()
    assert "the job is COMPLETED" in final
    assert re.search(r"^status +COMPLETED$", final, re.MULTILINE)
    assert f"100%  {RECORDS} of {RECORDS} records" in final
    assert "135 processed, 0 invalid, 15 failed, 0 pending" in final
    assert "failed records: `batchactions-peewee failed" in final
    assert "Traceback" not in final
    assert tmux.pane("cursor_flag") == "1", "the cursor is shown again"
    # Redrawn in place: one view on the screen (and above it), never one under the other.
    assert all(s.count("\nstatus ") == 1 for s in [*seen, final])


def test_status_watch_on_a_terminal_shows_a_paused_job_and_ends_when_it_is_aborted(
    tmp_path: Path, sqlite_target: Target, tmux: Tmux
) -> None:
    job_id = prepare(tmp_path, sqlite_target)
    ok(cli("pause", job_id, *sqlite_target.args, cwd=tmp_path))
    tmux.start(
        "status", job_id, "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path
    )
    paused = tmux.wait_for(lambda s: "paused: the workers wait" in s, "the paused job")
    assert re.search(r"^status +PAUSED$", paused, re.MULTILINE)
    assert f"`batchactions-peewee resume {job_id} --database" in paused
    ok(cli("abort", job_id, *sqlite_target.args, cwd=tmp_path))
    assert tmux.wait_for_exit() == 1, "a job that did not complete: exit 1"
    final = tmux.screen()
    assert "the job is ABORTED" in final and "Traceback" not in final


def test_jobs_watch_on_a_terminal_refreshes_the_table_until_ctrl_c(
    tmp_path: Path, sqlite_target: Target, tmux: Tmux
) -> None:
    ok(cli("init", *sqlite_target.args, cwd=tmp_path))
    tmux.start("jobs", "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path)
    empty = tmux.wait_for(lambda s: "no jobs" in s, "an empty list")
    assert "recent jobs, every 0.2 s, Ctrl-C to stop" in empty
    job_id = prepare(tmp_path, sqlite_target)
    row = re.compile(rf"^{job_id} +(\w+) +{RECORDS} +0%", re.MULTILINE)
    listed = tmux.wait_for(lambda s: bool(row.search(s)), "the new job")
    assert re.search(r"^job +status +records +done", listed, re.MULTILINE)
    assert "no jobs" not in listed
    found = row.search(listed)
    assert found and found[1] == "PROCESSING"
    ok(cli("abort", job_id, *sqlite_target.args, cwd=tmp_path))
    tmux.wait_for(lambda s: (m := row.search(s)) is not None and m[1] == "ABORTED", "ABORTED")

    tmux("send-keys", "-t", tmux.session, "C-c")
    assert tmux.wait_for_exit() == 130
    after = tmux.screen()
    assert "Traceback" not in after and "KeyboardInterrupt" not in after
    assert row.search(after), "the last table stays on the screen"
    assert tmux.pane("cursor_flag") == "1", "the cursor is shown again"


# -- not a terminal -------------------------------------------------------------------------


def test_status_watch_into_a_pipe_prints_plain_lines_when_something_changed(
    tmp_path: Path, sqlite_target: Target
) -> None:
    job_id = prepare(tmp_path, sqlite_target)
    watch = start(
        "status", job_id, "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path
    )
    first = first_line(watch.stdout)
    assert first.endswith(
        " PROCESSING 0% 0/150 records (0 invalid, 0 failed), 0/10 batches done, 0 leases\n"
    )
    worker = work(job_id, sqlite_target, tmp_path)
    lines = [first, *line_with(watch.stdout, " 1 lease")]
    let_through(tmp_path, 1)
    lines += line_with(watch.stdout, " 15/150 records")
    let_through(tmp_path, RECORDS // BATCH_SIZE)
    rest, err = watch.communicate(timeout=TIMEOUT_S)
    worker_ids(worker)
    assert watch.returncode == 0, err
    assert err == ""
    lines += rest.splitlines(keepends=True)
    assert "\x1b" not in "".join(lines)
    line = re.compile(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (PROCESSING|COMPLETED) (\d+)% (\d+)/150 records "
        r"\(0 invalid, \d+ failed\), \d+/10 batches done, \d+ leases?"
    )
    matches = [line.match(text) for text in lines]
    assert all(matches), lines
    assert re.search(
        r" COMPLETED 100% 150/150 records \(0 invalid, 15 failed\), 10/10 batches done, "
        r"0 leases, [\d.]+ records/s, took [\d.]+ s$",
        lines[-1],
    )
    done = [int(m[3]) for m in matches if m]
    assert done == sorted(done), "progress only goes forward"
    states = [text.partition(" lease")[0][20:] for text in lines]
    assert len(states) == len(set(states)), "a line only when something changed"


def test_status_watch_json_is_one_status_report_per_line_per_refresh(
    tmp_path: Path, target: Target
) -> None:
    job_id = prepare(tmp_path, target)
    keys = set(as_json(cli("status", job_id, "--json", *target.args, cwd=tmp_path)))
    watch = start(
        "status", job_id, "--watch", "--json", "--interval", INTERVAL, *target.args, cwd=tmp_path
    )
    reports = [json.loads(first_line(watch.stdout))]
    worker = work(job_id, target, tmp_path)
    while not reports[-1]["leases"]:
        reports.append(json.loads(first_line(watch.stdout)))
    let_through(tmp_path, RECORDS // BATCH_SIZE)
    rest, err = watch.communicate(timeout=TIMEOUT_S)
    [holder] = worker_ids(worker)
    assert watch.returncode == 0, err
    held = [(x["workerId"], x["batchIndex"], x["stale"]) for x in reports[-1]["leases"]]
    assert held == [(holder, 0, False)]
    reports += [json.loads(line) for line in rest.splitlines()]
    assert all(set(r) == keys for r in reports)
    assert (reports[0]["status"], reports[0]["pendingRecords"]) == ("PROCESSING", RECORDS)
    last = reports[-1]
    assert (last["status"], last["pendingRecords"], last["failedRecords"]) == ("COMPLETED", 0, 15)
    assert [r["status"] for r in reports[:-1]] == ["PROCESSING"] * (len(reports) - 1)


def test_a_job_still_being_prepared_shows_as_such_and_a_deleted_one_ends_the_watch(
    tmp_path: Path, sqlite_target: Target
) -> None:
    store, database = sqlite_target.store()
    try:
        store.create_tables()
        created = JobState(
            id="half-done",
            config=JobConfig(batch_size=10, source="big.csv"),
            status=JobStatus.CREATED,
            started_at=store.now(),
        )
        store.save_job_state(created)
        store._save_pending_records("half-done", "b0", 0, [{"n": n} for n in range(7)])
    finally:
        database.close()
    watch = start(
        "status", "half-done", "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path
    )
    assert first_line(watch.stdout).endswith(" CREATED preparing, 7 records written so far\n")
    ok(cli("delete", "half-done", *sqlite_target.args, cwd=tmp_path))
    _, err = watch.communicate(timeout=TIMEOUT_S)
    assert watch.returncode == 1
    gone = cli("status", "half-done", *sqlite_target.args, cwd=tmp_path)
    assert err == gone.stderr and err.startswith("batchactions-peewee: error: no job half-done")


def test_jobs_watch_into_a_pipe_prints_each_job_when_it_changed_and_ctrl_c_ends_it(
    tmp_path: Path, sqlite_target: Target
) -> None:
    ok(cli("init", *sqlite_target.args, cwd=tmp_path))
    watch = start(
        "jobs", "--watch", "--json", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path
    )
    assert json.loads(first_line(watch.stdout)) == []
    job_id = prepare(tmp_path, sqlite_target)
    # While prepare writes, the job is listed CREATED; then PROCESSING.
    listed: list[dict[str, str]] = []
    while not any(j["status"] == "PROCESSING" for j in listed):
        listed = json.loads(first_line(watch.stdout))
    assert [(j["jobId"], j["status"]) for j in listed] == [(job_id, "PROCESSING")]
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=TIMEOUT_S)
    assert watch.returncode == 130
    assert err == ""

    plain = start("jobs", "--watch", "--interval", INTERVAL, *sqlite_target.args, cwd=tmp_path)
    line = first_line(plain.stdout)
    assert line.endswith(f" {job_id} PROCESSING 0% of {RECORDS} records (0 invalid, 0 failed)\n")
    ok(cli("abort", job_id, *sqlite_target.args, cwd=tmp_path))
    assert f" {job_id} ABORTED 0% of {RECORDS} records" in first_line(plain.stdout)
    plain.send_signal(signal.SIGINT)
    rest, err = plain.communicate(timeout=TIMEOUT_S)
    assert plain.returncode == 130 and err == ""
    assert "\x1b" not in line + rest


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["status", "j", "--watch", "--interval", "0"], "must be a positive number of seconds"),
        (["status", "j", "--watch", "--interval", "abc"], "not a number of seconds: 'abc'"),
        (["jobs", "--watch", "--interval", "-1"], "must be a positive number of seconds"),
        (["jobs", "--watch", "--interval", "nan"], "must be a positive number of seconds"),
        (["jobs", "--watch", "--interval", "inf"], "must be a positive number of seconds"),
    ],
)
def test_a_bad_interval_is_a_short_usage_error(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    result = cli(*arguments, cwd=tmp_path)
    assert result.returncode == 2
    error, usage = result.stderr.splitlines()
    assert error.startswith(f"batchactions-peewee {arguments[0]}: error: argument --interval: ")
    assert message in error
    assert usage.startswith("usage: ")
    assert not (tmp_path / "batchactions.db").exists(), "no database was opened"


@pytest.mark.parametrize("command", [["status", "j"], ["jobs"]])
def test_an_interval_without_watch_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    result = cli(*command, "--interval", "2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "batchactions-peewee: error: --interval goes with --watch\n"


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_watching_an_unknown_job_is_the_error_of_status(
    tmp_path: Path, sqlite_target: Target, extra: list[str]
) -> None:
    ok(cli("init", *sqlite_target.args, cwd=tmp_path))
    once = cli("status", "nope", *sqlite_target.args, cwd=tmp_path)
    watched = cli("status", "nope", "--watch", *extra, *sqlite_target.args, cwd=tmp_path)
    assert (watched.returncode, watched.stderr, watched.stdout) == (1, once.stderr, "")
    assert once.stderr.startswith("batchactions-peewee: error: no job nope in sqlite:///")


# -- the screen -----------------------------------------------------------------------------


def test_each_frame_is_drawn_over_the_last_cut_to_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "12")
    monkeypatch.setenv("LINES", "5")
    out = io.StringIO()
    screen = Screen(out)
    screen.draw(lambda width: ["a" * 20, "b"])
    assert out.getvalue() == f"\r{'a' * 11}\x1b[K\nb\x1b[K\n{CLEAR_BELOW}"
    out.seek(0)
    out.truncate()
    screen.draw(lambda width: [str(n) for n in range(6)])
    assert out.getvalue() == (
        "\r\x1b[2A"
        + "".join(f"{n}\x1b[K\n" for n in range(3))
        + "... and 3 m\x1b[K\n"
        + CLEAR_BELOW
    )
    monkeypatch.setenv("COLUMNS", "40")
    out.seek(0)
    out.truncate()
    screen.draw(lambda width: ["c" * width], final=True)
    assert out.getvalue().startswith(CLEAR_SCREEN + "c" * 40), "after a resize: from the top"


def test_cut_counts_wide_characters_and_hides_control_characters() -> None:
    assert cut("日本語のファイル", 5) == "日本"
    assert cut("a\x1b[2Jb\tc", 10) == "a?[2Jb?c"
    assert fit(["x"] * 10, 80, 4) == ["x", "x", "... and 8 more lines"]


def test_the_cursor_is_shown_again_however_the_view_ends() -> None:
    out = io.StringIO()
    with pytest.raises(RuntimeError), Screen(out).active():
        raise RuntimeError("the database went away")
    assert out.getvalue() == "\x1b[?25l\x1b[?25h"
